"""sonoedge export stage: research models → distilled, quantized ONNX / TensorRT artifacts.

Needs the ``export`` extra (torch, onnx). Filled in by the models and export issues.
"""

__all__: list[str] = []

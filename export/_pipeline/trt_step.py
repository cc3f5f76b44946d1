"""The pipeline's TensorRT step: ONNX → ``.plan``, skipped (nothing written) without TensorRT."""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

from export._pipeline.common import SKIPPED_NO_TRT, Artifact, check_contract
from sdk.artifact import read_onnx_file_metadata
from sdk.errors import BackendUnavailableError, InputError

# --------------------------------------------------------------------------- TensorRT


def build_trt(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    precision: str = "fp16",
    *,
    profile: tuple[int, int, int] = (1, 1, 8),
    workspace_gb: float = 2.0,
    timing_cache: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> Artifact:
    """ONNX → TensorRT ``.plan`` (:func:`export.tensorrt_build.build_engine`).

    ``precision``: ``"fp16"`` (from the FP32 export, cast by
    :func:`export.tensorrt_build.fp16_onnx` with sensitive ops kept FP32), ``"int8"`` (from the
    :func:`quantize_trt` QDQ graph) or ``"fp32"``. Returns the artifact with its status:
    ``"ok"``, or ``"skipped: TensorRT not installed"`` / ``"skipped: <why>"`` when TensorRT or
    a GPU is missing -- then nothing is written. Default output ``<stem>.<precision>.plan``.

    Raises:
        InputError: a precision the graph does not carry; ModelError: TensorRT rejects the
            graph, an ONNX off the contract or without metadata.
    """
    import tempfile

    from export.tensorrt_build import build_engine, fp16_onnx
    from sdk.backends.trt_common import trt_module

    src = Path(onnx_path)
    if precision not in ("fp32", "fp16", "int8"):
        raise InputError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    check_contract(src)
    md = read_onnx_file_metadata(src)
    base = src.name.removesuffix(".onnx").removesuffix(".trt-int8")
    out = Path(out) if out is not None else src.with_name(f"{base}.{precision}.plan")
    fmt = f"trt-{precision}"
    label = name or f"{base} {fmt}"

    def skipped(exc: BackendUnavailableError) -> Artifact:
        if importlib.util.find_spec("tensorrt") is None:
            return Artifact(label, fmt, None, SKIPPED_NO_TRT)
        return Artifact(label, fmt, None, f"skipped: {str(exc).splitlines()[0]}")

    if precision == "int8":
        from export.tensorrt_build import _graph_precision

        if _graph_precision(src) != "int8":
            return Artifact(
                label,
                fmt,
                None,
                "failed: the QDQ graph holds no quantized node "
                "(INT8 missed the accuracy budget); no INT8 engine",
            )
    with tempfile.TemporaryDirectory() as td:
        graph = src
        if precision == "fp16":
            try:  # no point casting to FP16 for a TensorRT that is not there
                trt_module()
            except BackendUnavailableError as exc:
                return skipped(exc)
            with warnings.catch_warnings():
                # Tiny weights flushed to FP16's range: expected, and checked by the build.
                warnings.simplefilter("ignore", UserWarning)
                graph = fp16_onnx(src, Path(td) / "fp16.onnx")
        try:
            # INT8: build_engine validates the Q/DQ graph before it needs TensorRT.
            path = build_engine(
                graph, out, md, precision, profile, workspace_gb, timing_cache, cache=None
            )
        except BackendUnavailableError as exc:
            return skipped(exc)
    return Artifact(label, fmt, path, "ok")

"""Eager PyTorch model → ONNX file (opset ≥ 17, dynamic batch), and sonoedge metadata into it.

:func:`to_onnx_file` is the bare export: :func:`export.pipeline.to_onnx`
(``export/_pipeline/onnx_step.py``) builds on it (metadata, ``onnx.checker``, parity against
eager PyTorch), and the models' contract tests go through it, so every registered architecture
is known to export. :func:`embed_metadata` writes an :class:`sdk.artifact.Metadata` into an ONNX
file and stamps its integrity digest.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["embed_metadata", "embed_props", "to_onnx_file"]

DEFAULT_OPSET = 17


class _TupleOutputs(nn.Module):
    """ONNX wants positional outputs: the contract's dict in ``output_names`` order."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(model.output_names)

    def forward(self, *x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(*x)
        return tuple(out[n] for n in self.names)


def to_onnx_file(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | os.PathLike[str],
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``model`` (eval mode) with a dynamic batch axis; written to a temporary name and
    renamed, so a failed export leaves no file. Input names: ``input`` (then ``input_1``...)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    was_training = model.training
    model.eval()
    wrapped = _TupleOutputs(model)
    in_names = ["input"] + [f"input_{i}" for i in range(1, len(example_inputs))]
    axes = {n: {0: "batch"} for n in (*in_names, *wrapped.names)}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter: mature for these conv nets, deterministic and fast. The
            # dynamo exporter is the future default; revisit when it handles grid_sample and
            # dynamic batch as reliably.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            # Shape asserts inside torch's own GroupNorm trace; the graph is unaffected.
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                wrapped,
                tuple(example_inputs),
                str(tmp),
                input_names=in_names,
                output_names=list(wrapped.names),
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    return path


def embed_metadata(path: str | os.PathLike[str], metadata: object) -> Path:
    """Write sonoedge metadata (an ``sdk.artifact.Metadata``) into an ONNX file's
    ``metadata_props`` (:func:`embed_props`)."""
    from sdk.artifact import METADATA_KEY, Metadata

    if not isinstance(metadata, Metadata):
        raise TypeError("metadata must be an sdk.artifact.Metadata")
    return embed_props(path, {METADATA_KEY: metadata.to_json()})


def embed_props(path: str | os.PathLike[str], entries: dict[str, str]) -> Path:
    """Set ``metadata_props`` entries of an ONNX file, atomically; the graph is checked with
    ``onnx.checker`` first. The file is then stamped with its integrity digest
    (``sdk.artifact.stamp_onnx_digest``: SHA-256 of every byte but the digest's own entry), which
    every backend (and ``sdk.refiner``) checks at load."""
    import onnx

    from sdk.artifact import DIGEST_KEY, stamp_onnx_digest

    path = Path(path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    props.update(entries)
    props.pop(DIGEST_KEY, None)  # stale: it hashed the file before this edit
    onnx.helper.set_model_props(model, props)
    tmp = path.with_name(path.name + ".tmp")
    try:
        onnx.save(model, str(tmp))
        stamp_onnx_digest(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

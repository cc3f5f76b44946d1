"""Backend template (after Polygraphy's runners): public methods validate and time; subclasses
implement only ``_load_impl`` / ``_infer_impl`` / ``_close_impl``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sdk.artifact import Metadata
from sdk.errors import InputError, ModelError

__all__ = ["MAX_DYNAMIC_BATCH", "Backend", "IOSpec"]

#: Batch cap for models with a dynamic batch axis (the input buffer is sized for it).
MAX_DYNAMIC_BATCH = 8


@dataclass(frozen=True)
class IOSpec:
    """One tensor of the model: name, dtype and shape (None for dynamic axes)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]


class Backend:
    """Runs one artifact. Inert until :meth:`load`; one instance per thread (see Analyzer)."""

    name: ClassVar[str] = "base"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        self.path = Path(path)
        self.device = device
        self.threads = threads
        self.metadata: Metadata | None = None
        self.inputs: tuple[IOSpec, ...] = ()
        self.outputs: tuple[IOSpec, ...] = ()
        self.last_infer_ms = 0.0
        self._loaded = False

    # ---- to implement --------------------------------------------------------------------------
    @classmethod
    def probe(cls) -> tuple[bool, str]:
        """(usable here, reason) without loading anything heavy."""
        raise NotImplementedError

    def _load_impl(self) -> None:
        raise NotImplementedError

    def _infer_impl(self, x: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _close_impl(self) -> None:
        pass

    @property
    def max_batch(self) -> int:
        """Most frames one :meth:`infer` call takes: the input's static batch size, else
        ``MAX_DYNAMIC_BATCH``. Backends that run one frame per call override it."""
        if not self.inputs:
            return 1
        b = self.inputs[0].shape[0]
        return b if isinstance(b, int) and b >= 1 else MAX_DYNAMIC_BATCH

    def _check_outputs_against_metadata(self, source: str | None = None) -> None:
        """Every output the metadata names must exist in the graph."""
        assert self.metadata is not None
        names = {o.name for o in self.outputs}
        for role, name in self.metadata.outputs.items():
            if name and name not in names:
                raise ModelError(
                    f"{source or self.path}: metadata maps {role} to output {name!r}, which the "
                    f"graph lacks (outputs: {sorted(names)}); re-export the model"
                )

    def _check_io_against_metadata(self, source: str | None = None) -> None:
        """After ``_load_impl`` set ``metadata``, ``inputs`` and ``outputs``: every output the
        metadata names must exist, and the graph's one input (where its dims are static) must
        take what the metadata says the frame path feeds it: (batch, len(channels), height,
        width). Refused here, at load, rather than as an error blaming every frame."""
        self._check_outputs_against_metadata(source)
        md = self.metadata
        assert md is not None
        source = source or str(self.path)
        if len(self.inputs) != 1:
            raise ModelError(
                f"{source}: the graph has {len(self.inputs)} inputs "
                f"({[i.name for i in self.inputs]}); a sonoedge model takes exactly one, the "
                "preprocessed frame batch; re-export the model"
            )
        spec = self.inputs[0]
        want = (None, len(md.channels), *md.input_size)
        if len(spec.shape) != 4 or any(
            g is not None and w is not None and g != w
            for g, w in zip(spec.shape, want, strict=True)
        ):
            shape = tuple("?" if g is None else g for g in spec.shape)
            raise ModelError(
                f"{source}: the metadata describes input (batch, {want[1]}, {want[2]}, "
                f"{want[3]}) (input.channels {list(md.channels)}, input.size "
                f"{list(md.input_size)}), but the graph's input {spec.name!r} has shape {shape}; "
                "the metadata does not belong to this graph: re-export the model"
            )

    # ---- template ------------------------------------------------------------------------------
    def load(self) -> Backend:
        if self._loaded:
            return self
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such artifact file")
        self._load_impl()
        if self.metadata is None:
            raise ModelError(f"{self.path}: the backend found no metadata")
        self._loaded = True
        return self

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on a preprocessed batch ``(B, C, h, w)``; returns outputs by name."""
        if not self._loaded:
            raise InputError("backend not loaded: call load() first (Analyzer does this)")
        spec = self.inputs[0]
        if x.dtype != spec.dtype:
            raise InputError(f"input {spec.name!r} must be {spec.dtype}, got {x.dtype}")
        if x.ndim != len(spec.shape) or any(
            s is not None and s != d for s, d in zip(spec.shape, x.shape, strict=True)
        ):
            raise InputError(f"input {spec.name!r} must have shape {spec.shape}, got {x.shape}")
        t0 = time.perf_counter()
        out = self._infer_impl(x)
        self.last_infer_ms = (time.perf_counter() - t0) * 1e3
        return out

    def close(self) -> None:
        if self._loaded:
            self._close_impl()
            self._loaded = False

    def __enter__(self) -> Backend:
        return self.load()

    def __exit__(self, *exc: Any) -> None:
        self.close()

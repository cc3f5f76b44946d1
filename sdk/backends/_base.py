"""Backend template (after Polygraphy's runners): public methods validate and time; subclasses
implement only ``_load_impl`` / ``_infer_impl`` / ``_close_impl`` (and ``_infer_frame_impl``
when they preprocess on the device). Capabilities are class attributes declared here, read once
by :class:`sdk.pipeline.FramePipeline` at load to pick its stages -- never found by duck typing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from sdk.artifact import Metadata, verify_onnx_digest
from sdk.errors import BackendUnavailableError, InputError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    from sdk.kernels import PreprocessSpec

__all__ = ["MAX_DYNAMIC_BATCH", "Backend", "IOSpec"]

#: Batch cap for models with a dynamic batch axis (the input buffer is sized for it).
MAX_DYNAMIC_BATCH = 8

#: The model contract (docs/ARCHITECTURE.md, "The model contract"): rank and meaning of each
#: output role's axes.
ROLE_AXES: dict[str, tuple[str, ...]] = {
    "mask_logits": ("batch", "1", "h'", "w'"),
    "class_logits": ("batch", "classes"),
    "features": ("batch", "F", "hf", "wf"),
}


@dataclass(frozen=True)
class IOSpec:
    """One tensor of the model: name, dtype and shape (None for dynamic axes)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]


class Backend:
    """Runs one artifact. Inert until :meth:`load`; one instance per thread (see Analyzer)."""

    name: ClassVar[str] = "base"

    # ---- capabilities: declared by each backend class ------------------------------------------
    #: :meth:`infer` may run on several threads at once. ONNX Runtime's ``session.run`` is; the
    #: others (TensorRT contexts and CUDA graphs, OpenVINO infer requests, torch's CUDA state)
    #: take one call at a time, and the FramePipeline serializes their calls.
    reentrant: ClassVar[bool] = False
    #: :meth:`infer` accepts a device-resident input (a CUDA ``sdk.kernels.cuda.DeviceArray``),
    #: so a frame's tensor need not cross to the host. No backend declares it yet (issue #17
    #: item 2); the pipeline's device route today is ``device_preprocess``.
    device_input: ClassVar[bool] = False
    #: Implements :meth:`_infer_frame_impl`: the raw uint8 frame in, preprocessing on the device
    #: into the input binding. Whether it can run *here* (e.g. the CUDA kernels compiled in) is
    #: :meth:`device_preprocess_available`.
    device_preprocess: ClassVar[bool] = False
    #: Most frames one call takes whatever the model's batch axis allows (None: no limit of the
    #: backend's own); :attr:`max_batch` combines both.
    batch_limit: ClassVar[int | None] = None

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        self.path = Path(path)
        self.device = device
        self.threads = threads
        self.metadata: Metadata | None = None
        self.inputs: tuple[IOSpec, ...] = ()
        self.outputs: tuple[IOSpec, ...] = ()
        self.last_infer_ms = 0.0
        #: Check every inference's outputs against the model contract
        #: (:meth:`_check_output_values`). The Analyzer turns it on; a bare Backend used as a plain
        #: model runner (tests of single ops) leaves it off.
        self.check_outputs = False
        #: Let the runtime's worker threads busy-wait within a model call (never between calls);
        #: backends whose runtime has no such switch ignore it. See
        #: :func:`sdk.backends.onnxruntime.session_options`. Set before :meth:`load`.
        self.spin = True
        #: The ``.onnx`` file's integrity digest ("sha256:..."), checked at load; None when the
        #: file carries none (a user's plain ONNX) or is not an ``.onnx``.
        self.digest: str | None = None
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

    def _infer_frame_impl(self, frame: np.ndarray, spec: PreprocessSpec) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def loaded(self) -> bool:
        """:meth:`load` has run and :meth:`close` has not."""
        return self._loaded

    @property
    def max_batch(self) -> int:
        """Most frames one :meth:`infer` call takes: the input's static batch size, else
        ``MAX_DYNAMIC_BATCH``, capped by the class's :attr:`batch_limit` (1 before load)."""
        if not self.inputs:
            return 1
        b = self.inputs[0].shape[0]
        n = b if isinstance(b, int) and b >= 1 else MAX_DYNAMIC_BATCH
        return n if self.batch_limit is None else min(n, self.batch_limit)

    def device_preprocess_available(self) -> bool:
        """The class declares :attr:`device_preprocess`, the backend is loaded, and what the
        device path needs is present (backends override to add their run-time checks)."""
        return self.device_preprocess and self._loaded

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

    def _role_sizes(self) -> dict[str, dict[int, int]]:
        """Per role, the axis sizes the metadata fixes: mask channels 1, classes, features F."""
        md = self.metadata
        assert md is not None
        want: dict[str, dict[int, int]] = {"mask_logits": {1: 1}}
        want["class_logits"] = {1: len(md.class_names)}
        if md.head is not None:
            want["features"] = {1: int(md.head["w1"].shape[1])}
        return want

    def _check_output_roles(self, source: str | None = None) -> None:
        """Each output the metadata maps to a role must be what the role means: one output per
        role, a float tensor of the role's rank, every static dim >= 1, one mask channel, as many
        class logits as class names, as many features as the head's input. Refused at load: a
        features role mapped to the mask logits ran and answered lesions out of the mask."""
        md = self.metadata
        assert md is not None
        source = source or str(self.path)
        specs = {o.name: o for o in self.outputs}
        seen: dict[str, str] = {}
        for role in ROLE_AXES:  # contract order: mask_logits first
            name = md.outputs.get(role)
            if not name:
                continue
            if name in seen:
                raise ModelError(
                    f"{source}: the metadata maps both outputs.{seen[name]} and outputs.{role} "
                    f"to the graph output {name!r}; each role needs its own output: re-export "
                    "or re-import the model with the right mapping"
                )
            seen[name] = role
        for role, name in md.outputs.items():
            if not name or role not in ROLE_AXES:
                continue
            if role == "features" and md.head is None:
                raise ModelError(
                    f"{source}: outputs.features is mapped but the metadata has no head weights "
                    "to classify the pooled features; re-export the model"
                )
            spec = specs.get(name)
            if spec is None:  # _check_outputs_against_metadata reports it
                continue
            axes = ROLE_AXES[role]
            shape = tuple("?" if d is None else d for d in spec.shape)
            if spec.dtype.kind != "f":
                raise ModelError(
                    f"{source}: output {name!r} (outputs.{role}) is {spec.dtype}; the role "
                    "needs a float tensor; re-export the model"
                )
            if not spec.shape:  # rank unknown to the runtime: checked on the first frame
                continue
            if len(spec.shape) != len(axes):
                raise ModelError(
                    f"{source}: output {name!r} (outputs.{role}) has shape {shape}; the role is "
                    f"({', '.join(axes)}), rank {len(axes)}: the metadata maps the wrong output "
                    "or the model is off the contract; re-export or re-import it"
                )
            if any(d is not None and d < 1 for d in spec.shape):
                raise ModelError(
                    f"{source}: output {name!r} (outputs.{role}) has shape {shape}: an axis of "
                    "size 0 holds nothing to analyze; the graph is broken: re-export the model"
                )
            for axis, size in self._role_sizes().get(role, {}).items():
                got = spec.shape[axis]
                if got is not None and got != size:
                    raise ModelError(
                        f"{source}: output {name!r} (outputs.{role}) has {got} on its "
                        f"{axes[axis]!r} axis (shape {shape}), the metadata needs {size} "
                        f"({self._why(role)}): the metadata maps the wrong output or does not "
                        "belong to this graph; re-export the model"
                    )

    def _why(self, role: str) -> str:
        md = self.metadata
        assert md is not None
        if role == "mask_logits":
            return "one mask-logit channel"
        if role == "class_logits":
            return f"one logit per class of {list(md.class_names)}"
        return "the head's input size, head.w1 (hidden, F)"

    def _check_output_values(self, out: dict[str, np.ndarray], batch: int) -> None:
        """What one inference returned, per role: present, the role's rank, every dim >= 1, the
        batch, the sizes the metadata fixes, and finite features (the pooling kernel refuses NaN
        too, as an InputError; here it is the model's fault). Microseconds a frame."""
        md = self.metadata
        assert md is not None
        sizes = self._role_sizes()
        for role, name in md.outputs.items():
            if not name or role not in ROLE_AXES:
                continue
            a = out.get(name)
            axes = ROLE_AXES[role]
            bad = None
            if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
                bad = "is missing or not a float array"
            elif a.ndim != len(axes) or min(a.shape) < 1 or a.shape[0] != batch:
                bad = f"has shape {a.shape}, the role is ({', '.join(axes)}) for {batch} frames"
            elif any(a.shape[ax] != n for ax, n in sizes.get(role, {}).items()):
                bad = f"has shape {a.shape}: {self._why(role)}"
            elif role == "features" and not np.isfinite(a).all():
                bad = "contains NaN or inf"
            if bad:
                raise ModelError(
                    f"{self.path}: the model's output {name!r} (outputs.{role}) {bad}; the model "
                    "is off the contract or broken: re-export it"
                )

    def _check_io_against_metadata(self, source: str | None = None) -> None:
        """After ``_load_impl`` set ``metadata``, ``inputs`` and ``outputs``: every output the
        metadata names must exist, and the graph's one input (where its dims are static) must
        take what the metadata says the frame path feeds it: (batch, len(channels), height,
        width). Refused here, at load, rather than as an error blaming every frame."""
        self._check_outputs_against_metadata(source)
        self._check_output_roles(source)
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
            raise ModelError(
                f"{self.path}: no such artifact file; for the embedded default model use "
                "sdk.Analyzer() (no path) or sdk.Analyzer(sdk.default_model())"
            )
        if self.path.suffix.lower() == ".onnx":
            # Before any runtime parses it: a flipped weight byte must be an error, never a
            # silently different diagnosis (one SHA-256 pass, ~1 ms on the default model).
            self.digest = verify_onnx_digest(self.path)
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
        if self.check_outputs:
            self._check_output_values(out, x.shape[0])
        return out

    def infer_frame(self, frame: np.ndarray, spec: PreprocessSpec) -> dict[str, np.ndarray]:
        """Run one raw frame end to end on the device: uint8 ``(H, W)`` / ``(H, W, C)``,
        preprocessed on the device with ``spec`` (its ``size`` the model's input size, its ROI,
        colour order and interpolation this frame's), then the model. Only for backends that
        declare :attr:`device_preprocess`; checked and timed like :meth:`infer`."""
        if not self._loaded:
            raise InputError("backend not loaded: call load() first (Analyzer does this)")
        if not self.device_preprocess_available():
            raise BackendUnavailableError(
                f"the {self.name} backend cannot preprocess on the device here; preprocess on "
                "the host (sdk.kernels.preprocess) and call infer()"
            )
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise InputError(
                "frame must be a uint8 numpy array (H, W) or (H, W, C), got "
                f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}"
            )
        spec_in = self.inputs[0]
        want = tuple(d for d in spec_in.shape[1:])
        got = (len(spec.channels), *spec.size)
        if spec.dtype != spec_in.dtype or any(
            w is not None and w != g for w, g in zip(want, got, strict=True)
        ):
            raise InputError(
                f"preprocess spec {got} {spec.dtype} does not fit input {spec_in.name!r} "
                f"{spec_in.shape} {spec_in.dtype}"
            )
        t0 = time.perf_counter()
        out = self._infer_frame_impl(frame, spec)
        self.last_infer_ms = (time.perf_counter() - t0) * 1e3
        if self.check_outputs:
            self._check_output_values(out, 1)
        return out

    def close(self) -> None:
        if self._loaded:
            self._close_impl()
            self._loaded = False

    def __enter__(self) -> Backend:
        return self.load()

    def __exit__(self, *exc: Any) -> None:
        self.close()

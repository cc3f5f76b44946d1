"""torch backend: runs the same ``.onnx`` artifact as ONNX Runtime, on CUDA or CPU, through a small
ONNX → torch interpreter built at load time.

Why an interpreter and not a TorchScript / exported program: the project's rule is **no pickle on
any load path** (``torch.load``, ``torch.jit.load`` and ``torch.export.load`` all unpickle), and one
artifact should serve every backend. So :meth:`TorchBackend.load` parses the ``.onnx`` protobuf
(the ``onnx`` package; protobuf is data, not code), turns its initializers into tensors
(protobuf → numpy → torch) and maps every node to a torch functional op with the exact ONNX
semantics (:data:`SUPPORTED_OPS`). A model with an op outside that list is refused at load with
:class:`sdk.errors.BackendUnavailableError` naming the ops, never run half-way.

How a model runs:

* At load, everything computable from the initializers alone is folded once (e.g. every
  ``DequantizeLinear`` of int8 weights becomes float weights), ``QuantizeLinear →
  DequantizeLinear`` pairs on activations fuse into one simulated step (float math with ONNX's
  round-half-to-even and saturation), and unused nodes are dropped.
* Per input shape (the batch is dynamic), the graph is *specialized*: the first call runs it
  eagerly, evaluating shape arithmetic (``Shape`` → ``Gather`` → ``Concat`` …) on the host, and
  records the device ops as a flat program with every shape and constant baked in. Later calls
  with that shape replay the program: no host-side shape logic, no device → host syncs. A few
  shapes are cached (LRU); a new batch size costs one eager run.
* On CUDA the program is captured in a ``torch.cuda.CUDAGraph`` after warm-up and replayed per
  call between static input / output buffers, with pinned host buffers and ``non_blocking``
  copies on the backend's own stream; a new batch size re-captures. TF32 is off while the graph is
  captured / run (``tf32=False``; cuDNN's flag is process-global: set for our calls, then
  restored), so FP32 matches ONNX Runtime's FP32 within 1e-4. ``half=True``
  (or artifact metadata ``precision == "fp16"``) computes in FP16, keeping the ops that
  overflow or lose accuracy in FP16 (sigmoid, softmax, exp, reductions, normalizations,
  Q/DQ…) in FP32, like ``export.tensorrt_build.fp16_onnx`` does; inputs and outputs keep the
  graph's dtypes.
* Calls run under ``torch.inference_mode()``. ``threads`` sets ``torch.set_num_threads`` for the
  duration of each call and restores the previous value after: torch's intra-op thread count is
  **process-global**, so another thread using torch at the same moment sees it too.

The interpreter lives in ``sdk.backends._torch_ops``, one module per op family (elementwise,
shape, reduce, conv, resize, quant) around a core (graph, registry) and the interpreter proper.
onnx2torch was measured as a replacement and not adopted: it refuses most of the op parity cases,
the INT8 Q/DQ artifact and the seed exports, and is slower (``benchmarks/results/
onnx2torch-eval.md``).

torch and onnx are imported only when the backend is probed or loaded, never when ``sdk`` is:
``_require_torch`` imports torch and binds it into the interpreter's modules.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sdk.artifact import METADATA_KEY, Metadata
from sdk.backends._base import Backend, IOSpec
from sdk.backends._torch_ops import (
    SUPPORTED_OPS,
    Interpreter,
    Node,
    Program,
    Unsupported,
    attr_value,
    bind_torch,
    tensor_from_proto,
)
from sdk.errors import BackendUnavailableError, InputError, ModelError

__all__ = ["SUPPORTED_OPS", "TorchBackend"]

# The torch module, bound by _require_torch() on first probe / load (which also binds it in the
# interpreter's modules, sdk.backends._torch_ops); sdk itself never imports torch.
torch: Any = None

#: Oldest default-domain opset the interpreter accepts (Resize / Clip / Pad took their
#: current input-based forms in opset 11).
MIN_OPSET = 11
#: Warm-up runs before a CUDA graph capture (the first one specializes the program).
CUDA_WARMUP = 3

_IO_DTYPES = {1: np.dtype(np.float32), 10: np.dtype(np.float16)}


def _require_torch() -> Any:
    """Import torch (bind the module globals) or raise :class:`BackendUnavailableError`."""
    global torch
    try:
        import torch as torch_
        import torch.nn.functional as functional
    except ImportError as e:
        raise BackendUnavailableError(
            f"the torch backend needs PyTorch, which cannot be imported ({e}); install it "
            '(pip install torch, or pip install "sonoedge[export]"), or run the artifact with '
            "backend='onnxruntime'"
        ) from e
    torch = torch_
    bind_torch(torch_, functional)
    return torch_


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise BackendUnavailableError(
            "the torch backend reads the .onnx artifact with the `onnx` package, which cannot be "
            f"imported ({e}); pip install onnx, or use backend='onnxruntime'"
        ) from e
    return onnx


# ---- the backend --------------------------------------------------------------------------------
@dataclass
class _CudaState:
    """Buffers (and the captured graph) of one input shape on CUDA."""

    shape: tuple[int, ...]
    h_in: Any
    h_in_np: np.ndarray
    d_in: Any
    d_out: list[Any] | None = None
    h_out: list[Any] = field(default_factory=list)
    h_out_np: list[np.ndarray] = field(default_factory=list)
    graph: Any = None
    program: Program | None = None  # owns device tensors the graph reads: keep it alive


class TorchBackend(Backend):
    """Runs a ``.onnx`` artifact with PyTorch (see the module docstring for how).

    Args:
        path: the ``.onnx`` artifact (with sonoedge metadata).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
        threads: torch intra-op threads during each call (process-global in torch: set for the
            call and restored after). None: torch's default.
        half: compute in FP16 on CUDA (FP32 kept where FP16 is unsafe). None: when the
            artifact's metadata says ``precision == "fp16"`` and the device is CUDA.
        cuda_graph: capture the forward in a CUDA graph (CUDA only; re-captured when the batch
            size changes). Falls back to eager execution, with a warning, if capture fails.
        tf32: allow TF32 convolutions on Ampere+ GPUs (faster, ~1e-3 relative error). Off by
            default so FP32 outputs match ONNX Runtime's within 1e-4.
        channels_last: run 4-D activations and weights in NHWC memory layout (same results;
            oneDNN's depthwise convolutions are ~2x faster so). None: on CPU only.
    """

    name: ClassVar[str] = "torch"
    # Capabilities (sdk/backends/_base.py): one call at a time (the CUDA graph's static buffers,
    # torch's process-global thread count); host tensors in, no device preprocessing yet.
    reentrant: ClassVar[bool] = False
    device_input: ClassVar[bool] = False
    device_preprocess: ClassVar[bool] = False

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        threads: int | None = None,
        half: bool | None = None,
        cuda_graph: bool = True,
        tf32: bool = False,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(path, device, threads)
        if threads is not None and int(threads) < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        self.half_requested = half
        self.use_cuda_graph = bool(cuda_graph)
        self.tf32 = bool(tf32)
        self.channels_last_requested = channels_last
        self.channels_last = False
        self.half = False
        self.opset = 0
        self._interp: Interpreter | None = None
        self._cuda: _CudaState | None = None
        self._stream: Any = None
        self._torch_device: Any = None

    # ---- Backend API ----------------------------------------------------------------------------
    @classmethod
    def probe(cls) -> tuple[bool, str]:
        try:
            t = _require_torch()
        except BackendUnavailableError as e:
            return False, str(e)
        except Exception as e:  # a broken install (missing shared libraries...)
            return False, f"torch cannot be imported ({type(e).__name__}: {e})"
        if importlib.util.find_spec("onnx") is None:
            return False, (
                f"onnx not installed (torch {t.__version__} is; the torch backend reads .onnx "
                "artifacts with the onnx package): pip install onnx"
            )
        try:
            n = t.cuda.device_count() if t.cuda.is_available() else 0
        except Exception:
            n = 0
        where = f"cuda ({n} device(s)) and cpu" if n else "cpu (no CUDA device)"
        return True, f"torch {t.__version__}: {where}; runs .onnx artifacts (backend='torch')"

    @property
    def is_cuda(self) -> bool:
        return self._torch_device is not None and self._torch_device.type == "cuda"

    def _resolve_device(self) -> Any:
        d = str(self.device)
        cuda = torch.cuda.is_available()
        if d == "auto":
            return torch.device("cuda" if cuda else "cpu")
        if d == "cpu":
            return torch.device("cpu")
        if d == "cuda" or d.startswith("cuda:"):
            if not cuda:
                raise BackendUnavailableError(
                    f"device {d!r}: torch {torch.__version__} sees no CUDA device (a CPU-only "
                    "build, no driver or no GPU); use device='cpu' or install a CUDA build of torch"
                )
            dev = torch.device(d)
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise BackendUnavailableError(
                    f"device {d!r}: only {torch.cuda.device_count()} CUDA device(s) present"
                )
            return dev
        raise BackendUnavailableError(f"device {d!r} is not one of auto, cpu, cuda, cuda:N")

    def _load_impl(self) -> None:
        _require_torch()
        onnx = _require_onnx()
        self._torch_device = self._resolve_device()
        source = str(self.path)
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise ModelError(f"{source}: cannot read the artifact ({e.strerror})") from e
        try:
            model = onnx.ModelProto.FromString(data)
        except Exception as e:  # google.protobuf DecodeError and friends
            raise ModelError(
                f"{source}: not a readable ONNX model ({type(e).__name__}); the file is "
                "corrupted or not an ONNX model"
            ) from e
        if not model.HasField("graph") or not model.graph.node:
            raise ModelError(f"{source}: the ONNX file has no graph; it is corrupted or empty")
        props = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY not in props:
            raise ModelError(
                f"{source} carries no sonoedge metadata (metadata_props['{METADATA_KEY}']); "
                "export it with `sonoedge export`, or add metadata with "
                "export.onnx_export.embed_metadata"
            )
        self.metadata = Metadata.from_json(props[METADATA_KEY], source)
        self._interp = self._interpreter(model, onnx, source)
        if self.is_cuda:
            self._stream = torch.cuda.Stream(device=self._torch_device)
        shape = self._warmup_shape()
        if shape is not None:  # prove every op runs (and capture the CUDA graph) now
            self._infer_impl(np.zeros(shape, dtype=self.inputs[0].dtype))

    def _interpreter(self, model: Any, onnx: Any, source: str) -> Interpreter:
        g = model.graph
        opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
        self.opset = opsets.get("ai.onnx", 0)
        unsupported = Counter(
            nd.op_type if nd.domain in ("", "ai.onnx") else f"{nd.domain}::{nd.op_type}"
            for nd in g.node
            if nd.domain not in ("", "ai.onnx") or nd.op_type not in SUPPORTED_OPS
        )
        if unsupported:
            listed = ", ".join(f"{op} (x{k})" for op, k in sorted(unsupported.items()))
            raise BackendUnavailableError(
                f"{source}: the torch backend does not implement the ONNX op(s) {listed}; run "
                "this artifact with backend='onnxruntime' (sdk.Analyzer(path, "
                "backend='onnxruntime'))"
            )
        if self.opset < MIN_OPSET:
            raise BackendUnavailableError(
                f"{source}: ONNX opset {self.opset} is older than the torch backend supports "
                f"({MIN_OPSET}); re-export with opset >= 13, or use backend='onnxruntime'"
            )
        try:
            nodes = []
            for k, nd in enumerate(g.node):
                name = nd.name or f"{nd.op_type}_{k}"
                where = f"{source}: node {name!r} ({nd.op_type})"
                attrs = {a.name: attr_value(a, onnx, where) for a in nd.attribute}
                nodes.append(Node(nd.op_type, name, tuple(nd.input), tuple(nd.output), attrs))
            consts = {
                t.name: tensor_from_proto(t, onnx, f"{source}: initializer {t.name!r}")
                for t in g.initializer
            }
        except Unsupported as e:
            raise BackendUnavailableError(
                f"{source}: {e}; run this artifact with backend='onnxruntime'"
            ) from e
        real_inputs = [i for i in g.input if i.name not in consts]
        if len(real_inputs) != 1:
            raise ModelError(
                f"{source}: the torch backend feeds one input tensor; this model has "
                f"{len(real_inputs)} ({[i.name for i in real_inputs]}); use backend='onnxruntime'"
            )
        self.inputs = (self._spec(real_inputs[0], source),)
        self.outputs = tuple(self._spec(o, source) for o in g.output)
        md = self.metadata
        if md is not None:
            # Outputs only: the op tests run graphs of any input shape under stock metadata.
            self._check_outputs_against_metadata(source)
        half = self.half_requested
        if half is None:
            half = md is not None and md.precision == "fp16" and self._torch_device.type == "cuda"
        self.half = bool(half)
        cl = self.channels_last_requested
        self.channels_last = self._torch_device.type == "cpu" if cl is None else bool(cl)
        out_dtypes = [(o.name, getattr(torch, o.dtype.name)) for o in self.outputs]
        return Interpreter(
            nodes,
            consts,
            self.inputs[0].name,
            out_dtypes,
            self.opset,
            self._torch_device,
            self.half,
            source,
            channels_last=self.channels_last,
        )

    def _spec(self, v: Any, source: str) -> IOSpec:
        tt = v.type.tensor_type
        dt = _IO_DTYPES.get(tt.elem_type)
        if dt is None:
            raise ModelError(
                f"{source}: tensor {v.name!r} has unsupported type {tt.elem_type} "
                "(float32 or float16 expected)"
            )
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        return IOSpec(v.name, dt, shape)

    def _warmup_shape(self) -> tuple[int, ...] | None:
        md, dims = self.metadata, list(self.inputs[0].shape)
        if dims and dims[0] is None:
            dims[0] = 1
        if md is not None and len(dims) == 4:
            dims[1] = len(md.channels) if dims[1] is None else dims[1]
            dims[2] = md.input_size[0] if dims[2] is None else dims[2]
            dims[3] = md.input_size[1] if dims[3] is None else dims[3]
        return None if any(d is None for d in dims) else tuple(dims)

    # ---- running --------------------------------------------------------------------------------
    @contextmanager
    def _call_context(self) -> Iterator[None]:
        n = self.threads
        prev = torch.get_num_threads()
        change = n is not None and int(n) != prev
        if change:
            torch.set_num_threads(int(n))
        try:
            with torch.inference_mode():
                yield
        finally:
            if change:
                torch.set_num_threads(prev)

    def _infer_impl(self, x: np.ndarray) -> dict[str, np.ndarray]:
        assert self._interp is not None
        with self._call_context():
            if self.is_cuda:
                return self._infer_cuda(x)
            if not (x.flags.c_contiguous and x.flags.writeable):
                x = np.array(x, order="C")
            outs = self._interp.run(torch.from_numpy(x))
            return {  # fresh C-ordered arrays (outputs may be views, or channels-last)
                o.name: np.array(t.numpy(), order="C", copy=True)
                for o, t in zip(self.outputs, outs, strict=True)
            }

    @contextmanager
    def _cuda_flags(self) -> Iterator[None]:
        """TF32 off (unless asked for) while our kernels are chosen and launched."""
        cudnn = torch.backends.cudnn
        try:
            prev = cudnn.allow_tf32
            cudnn.allow_tf32 = self.tf32
        except RuntimeError:  # a torch that refuses the legacy flag: leave precision alone
            yield
            return
        try:
            yield
        finally:
            cudnn.allow_tf32 = prev

    def _infer_cuda(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.cuda.device(self._torch_device):
            return self._infer_cuda_on_device(x)

    def _infer_cuda_on_device(self, x: np.ndarray) -> dict[str, np.ndarray]:
        st = self._cuda
        if st is None or st.shape != x.shape:
            st = self._prepare_cuda(x)
        else:
            np.copyto(st.h_in_np, x)
            with self._cuda_flags(), torch.cuda.stream(self._stream):
                st.d_in.copy_(st.h_in, non_blocking=True)
                if st.graph is not None:
                    st.graph.replay()
                    outs = st.d_out
                else:
                    outs = self._interp.run(st.d_in)
                for h, d in zip(st.h_out, outs, strict=True):
                    h.copy_(d, non_blocking=True)
        self._stream.synchronize()
        return {o.name: a.copy() for o, a in zip(self.outputs, st.h_out_np, strict=True)}

    def _prepare_cuda(self, x: np.ndarray) -> _CudaState:
        """New input shape: static buffers, warm-up (specializes the program), graph capture;
        the call's own outputs are left in the pinned host buffers."""
        self._cuda = None  # free the previous graph and its memory pool first
        dev, stream = self._torch_device, self._stream
        dt = getattr(torch, self.inputs[0].dtype.name)
        h_in = torch.empty(x.shape, dtype=dt, pin_memory=True)
        st = _CudaState(
            tuple(x.shape), h_in, h_in.numpy(), torch.empty(x.shape, dtype=dt, device=dev)
        )
        np.copyto(st.h_in_np, x)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with self._cuda_flags():
            with torch.cuda.stream(stream):
                st.d_in.copy_(st.h_in, non_blocking=True)
                for _ in range(CUDA_WARMUP if self.use_cuda_graph else 1):
                    outs = self._interp.run(st.d_in)
            stream.synchronize()
            st.program = self._interp.program(st.shape)
            if self.use_cuda_graph:
                try:
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g, stream=stream, capture_error_mode="thread_local"):
                        st.d_out = self._interp.run(st.d_in)
                    st.graph = g
                except Exception as e:  # capture is best effort: eager execution still works
                    self.use_cuda_graph = False
                    st.graph, st.d_out = None, None
                    warnings.warn(
                        f"{self.path.name}: CUDA graph capture failed ({type(e).__name__}: {e}); "
                        "the torch backend runs this model eagerly",
                        RuntimeWarning,
                        stacklevel=4,
                    )
            with torch.cuda.stream(stream):
                if st.graph is not None:
                    st.graph.replay()
                    outs = st.d_out
                st.h_out = [torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in outs]
                st.h_out_np = [h.numpy() for h in st.h_out]
                for h, d in zip(st.h_out, outs, strict=True):
                    h.copy_(d, non_blocking=True)
        self._cuda = st
        return st

    def _close_impl(self) -> None:
        self._cuda = None
        self._interp = None
        self._stream = None

"""TensorRT backend: runs a ``.plan`` container with TensorRT 10.3 (JetPack 6) to 11.x.

Thin by design and **not executed on our build machines** (no GPU, no TensorRT there): the
container, fingerprint and metadata checks it relies on are tested; this file holds only the
TensorRT / CUDA calls. Name-based I/O (``set_tensor_address`` + ``execute_async_v3``), one CUDA
stream, pinned host buffers and asynchronous copies, through cuda-python. Batch 1 per call.

Two per-frame paths, both replayed from a **CUDA graph** after the first call:

* :meth:`infer` (a preprocessed host tensor): copy into pinned memory → H2D → engine → D2H.
* :meth:`infer_frame` (the raw uint8 frame; the backend declares ``device_preprocess`` and
  :class:`sdk.pipeline.FramePipeline` takes this route when the CUDA kernels are compiled in):
  frame → pinned buffer → H2D → our CUDA preprocess kernel writing straight into the engine's
  input binding → engine → D2H of the outputs. One graph per frame geometry
  (size, channels, ROI, colour order): a new geometry is run once uncaptured (TensorRT does its
  deferred, shape-dependent work in the first ``execute_async_v3``), then captured.

A capture that fails (an engine with data-dependent shapes or a plugin that synchronizes)
falls back to the plain stream sequence for the backend's lifetime, logged once; set
``SONOEDGE_CUDA_GRAPH=0`` to disable graphs. None of this has run on our machines (see the
README's "not verified" list); ``sonoedge doctor --gpu`` is the check for a GPU machine.
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from sdk.artifact import read_plan
from sdk.backends._base import Backend, IOSpec
from sdk.backends.trt_common import (
    check_fingerprint,
    cudart,
    current_fingerprint,
    trt_logger,
    trt_module,
)
from sdk.errors import BackendUnavailableError, KernelError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    from sdk.kernels import PreprocessSpec

__all__ = ["TensorRTBackend"]

log = logging.getLogger(__name__)


def _ok(result: Any, what: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise KernelError(f"{what} failed: CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTBackend(Backend):
    name: ClassVar[str] = "tensorrt"
    # The execution context and the CUDA graphs are shaped for batch 1 and run one call at a time.
    reentrant: ClassVar[bool] = False
    device_preprocess: ClassVar[bool] = True
    batch_limit: ClassVar[int | None] = 1

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        try:
            trt = trt_module()
            n = _ok(cudart().cudaGetDeviceCount(), "cudaGetDeviceCount")
        except (BackendUnavailableError, KernelError) as e:
            return False, str(e)
        if n == 0:
            return False, "no CUDA device"
        return True, f"TensorRT {trt.__version__}, {n} CUDA device(s)"

    def _load_impl(self) -> None:
        trt = trt_module()
        rt = cudart()
        md, engine_bytes = read_plan(self.path)
        check_fingerprint(md.tensorrt, current_fingerprint(), str(self.path))
        self.metadata = md
        self._rt = rt
        self._logger = trt_logger()
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise ModelError(f"{self.path}: TensorRT could not deserialize the engine; rebuild it")
        self._ctx = self._engine.create_execution_context()
        self._dev: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self._host_ptr: dict[str, int] = {}
        self._graphs: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._seen: set[tuple[Any, ...]] = set()
        self._graphs_ok = os.environ.get("SONOEDGE_CUDA_GRAPH", "1") != "0"
        self._frame_cap = 0  # bytes of the pinned / device frame staging buffers
        self._frame_host = self._frame_dev = 0
        self._stream = _ok(rt.cudaStreamCreate(), "cudaStreamCreate")
        try:
            self._bind(trt)
        except BaseException:
            self._close_impl()  # nothing allocated so far may leak when loading fails
            raise

    def _bind(self, trt: Any) -> None:
        """Input shapes (batch 1), device + pinned buffers and tensor addresses."""
        rt = self._rt
        ins, outs = [], []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            shape = list(self._engine.get_tensor_shape(name))
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if is_input:
                shape[0] = 1
                self._ctx.set_input_shape(name, tuple(shape))
            (ins if is_input else outs).append((name, dtype))
        for name, dtype in ins + outs:
            shape = tuple(self._ctx.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self._dev[name] = _ok(rt.cudaMalloc(nbytes), "cudaMalloc")
            hp = _ok(rt.cudaMallocHost(nbytes), "cudaMallocHost")
            self._host_ptr[name] = hp
            buf = (ctypes.c_byte * nbytes).from_address(hp)
            self._host[name] = np.frombuffer(buf, dtype=dtype).reshape(shape)
            self._ctx.set_tensor_address(name, self._dev[name])
        self.inputs = tuple(IOSpec(n, d, (None, *self._host[n].shape[1:])) for n, d in ins)
        self.outputs = tuple(IOSpec(n, d, (None, *self._host[n].shape[1:])) for n, d in outs)
        self._in_names = [n for n, _ in ins]
        self._out_names = [n for n, _ in outs]

    # ---- the per-frame sequences ----------------------------------------------------------------
    def _copy_outputs(self) -> None:
        rt = self._rt
        d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for o in self._out_names:
            _ok(
                rt.cudaMemcpyAsync(
                    self._host_ptr[o], self._dev[o], self._host[o].nbytes, d2h, self._stream
                ),
                "cudaMemcpyAsync(D2H)",
            )

    def _execute(self) -> None:
        if not self._ctx.execute_async_v3(int(self._stream)):
            raise KernelError("TensorRT execute_async_v3 failed (see the TensorRT log)")

    def _run(self, key: tuple[Any, ...], enqueue: Any) -> dict[str, np.ndarray]:
        """Run ``enqueue`` (which puts one frame's work on the stream) through the CUDA graph of
        ``key``: plain the first time (TensorRT's deferred setup), captured the second, replayed
        from then on. Returns copies of the outputs."""
        rt = self._rt
        graph = self._graphs.get(key)
        if graph is not None:
            _ok(rt.cudaGraphLaunch(graph[1], self._stream), "cudaGraphLaunch")
        elif self._graphs_ok and key in self._seen:
            if self._capture(key, enqueue):
                _ok(rt.cudaGraphLaunch(self._graphs[key][1], self._stream), "cudaGraphLaunch")
        else:
            enqueue()
            self._seen.add(key)
        _ok(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {o: self._host[o].copy() for o in self._out_names}

    def _capture(self, key: tuple[Any, ...], enqueue: Any) -> bool:
        """Capture ``enqueue`` as the graph of ``key``; False (after running the work plain)
        when the capture fails."""
        rt = self._rt
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        try:
            _ok(rt.cudaStreamBeginCapture(self._stream, mode), "cudaStreamBeginCapture")
            try:
                enqueue()
            finally:
                graph = _ok(rt.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
            exe = _ok(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except KernelError as e:
            # Not every engine can be captured: run uncaptured from now on, say so once.
            log.warning("%s: CUDA graph capture failed (%s); running without graphs", self.path, e)
            self._graphs_ok = False
            enqueue()  # this call's work still has to run
            return False
        self._graphs[key] = (graph, exe)
        return True

    def _drop_graphs(self) -> None:
        rt = self._rt
        for graph, exe in self._graphs.values():
            rt.cudaGraphExecDestroy(exe)
            rt.cudaGraphDestroy(graph)
        self._graphs.clear()
        self._seen.clear()

    def _infer_impl(self, x: np.ndarray) -> dict[str, np.ndarray]:
        rt = self._rt
        name = self._in_names[0]
        if x.shape[0] != 1:
            raise ModelError("the TensorRT backend runs batch 1 per call; call once per frame")
        np.copyto(self._host[name], x)

        def enqueue() -> None:
            _ok(
                rt.cudaMemcpyAsync(
                    self._dev[name],
                    self._host_ptr[name],
                    x.nbytes,
                    rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                    self._stream,
                ),
                "cudaMemcpyAsync(H2D)",
            )
            self._execute()
            self._copy_outputs()

        return self._run(("tensor",), enqueue)

    # ---- the frame path: CUDA preprocess into the input binding ---------------------------------
    def device_preprocess_available(self) -> bool:
        """Loaded, and the CUDA kernels are compiled in (:func:`sdk.kernels.cuda.available`)."""
        from sdk.kernels import cuda as kc

        return self._loaded and kc.available()

    def _stage(self, nbytes: int) -> None:
        """Pinned host + device frame buffers of at least ``nbytes`` (grown, never shrunk; a
        new buffer invalidates the graphs that captured the old addresses)."""
        if nbytes <= self._frame_cap:
            return
        rt = self._rt
        _ok(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        self._drop_graphs()
        if self._frame_cap:
            rt.cudaFreeHost(self._frame_host)
            rt.cudaFree(self._frame_dev)
        cap = max(nbytes, 2 * self._frame_cap)
        self._frame_host = _ok(rt.cudaMallocHost(cap), "cudaMallocHost")
        self._frame_dev = _ok(rt.cudaMalloc(cap), "cudaMalloc")
        self._frame_cap = cap

    def _infer_frame_impl(self, frame: np.ndarray, spec: PreprocessSpec) -> dict[str, np.ndarray]:
        """One uint8 frame ``(H, W)`` / ``(H, W, C)`` end to end on the GPU: staging copy,
        :func:`sdk.kernels.cuda.preprocess` into the input binding with ``spec`` (channels,
        sigma, ROI, mean, std, colour order, interpolation), the engine, the outputs."""
        from sdk.kernels import cuda as kc

        rt = self._rt
        f = np.ascontiguousarray(frame)
        self._stage(f.nbytes)
        host = np.frombuffer(
            (ctypes.c_byte * f.nbytes).from_address(self._frame_host), np.uint8
        ).reshape(f.shape)
        np.copyto(host, f)
        name = self._in_names[0]
        dev_frame = kc.DeviceArray(self._frame_dev, f.shape, np.dtype(np.uint8))
        dev_in = kc.DeviceArray(
            self._dev[name], tuple(self._host[name].shape[1:]), self.inputs[0].dtype
        )
        key = ("frame", f.shape, spec.roi, spec.color)

        def enqueue() -> None:
            _ok(
                rt.cudaMemcpyAsync(
                    self._frame_dev,
                    self._frame_host,
                    f.nbytes,
                    rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                    self._stream,
                ),
                "cudaMemcpyAsync(frame H2D)",
            )
            kc.preprocess(
                dev_frame,
                dev_in,
                channels=spec.channels,
                sigma=spec.sigma,
                roi=spec.roi,
                mean=spec.mean,
                std=spec.std,
                color=spec.color,
                interpolation=spec.interp,
                stream=int(self._stream),
            )
            self._execute()
            self._copy_outputs()

        return self._run(key, enqueue)

    def _close_impl(self) -> None:
        rt = self._rt
        rt.cudaStreamSynchronize(self._stream)
        self._drop_graphs()
        if self._frame_cap:
            rt.cudaFreeHost(self._frame_host)
            rt.cudaFree(self._frame_dev)
            self._frame_cap = 0
        for p in self._dev.values():
            rt.cudaFree(p)
        for p in self._host_ptr.values():
            rt.cudaFreeHost(p)
        self._dev, self._host_ptr, self._host = {}, {}, {}
        rt.cudaStreamDestroy(self._stream)
        del self._ctx, self._engine, self._runtime

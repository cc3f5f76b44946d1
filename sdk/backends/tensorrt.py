"""TensorRT backend: runs a ``.plan`` container with TensorRT 10.3 (JetPack 6) to 11.x.

Thin by design and **not executed on our build machines** (no GPU, no TensorRT there): the
container, fingerprint and metadata checks it relies on are tested; this file holds only the
TensorRT / CUDA calls. Name-based I/O (``set_tensor_address`` + ``execute_async_v3``), one CUDA
stream, pinned host buffers and asynchronous copies, through cuda-python. Batch 1 per call.

Not yet here (runtime issue): CUDA-graph capture of the per-frame sequence and the CUDA
preprocess kernel writing straight into the engine's input binding.
"""

from __future__ import annotations

import ctypes
from typing import Any, ClassVar

import numpy as np

from sdk.artifact import read_plan
from sdk.backends._base import Backend, IOSpec
from sdk.backends._trt_common import check_fingerprint, cudart, current_fingerprint, trt_module
from sdk.errors import BackendUnavailableError, KernelError, ModelError

__all__ = ["TensorRTBackend"]


def _ok(result: Any, what: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise KernelError(f"{what} failed: CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTBackend(Backend):
    name: ClassVar[str] = "tensorrt"

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
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise ModelError(f"{self.path}: TensorRT could not deserialize the engine; rebuild it")
        self._ctx = self._engine.create_execution_context()
        self._stream = _ok(rt.cudaStreamCreate(), "cudaStreamCreate")
        self._dev: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self._host_ptr: dict[str, int] = {}
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

    def _infer_impl(self, x: np.ndarray) -> dict[str, np.ndarray]:
        rt = self._rt
        h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        name = self._in_names[0]
        if x.shape[0] != 1:
            raise ModelError("the TensorRT backend runs batch 1 per call; call once per frame")
        np.copyto(self._host[name], x)
        _ok(
            rt.cudaMemcpyAsync(self._dev[name], self._host_ptr[name], x.nbytes, h2d, self._stream),
            "cudaMemcpyAsync(H2D)",
        )
        if not self._ctx.execute_async_v3(int(self._stream)):
            raise KernelError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        for o in self._out_names:
            _ok(
                rt.cudaMemcpyAsync(
                    self._host_ptr[o], self._dev[o], self._host[o].nbytes, d2h, self._stream
                ),
                "cudaMemcpyAsync(D2H)",
            )
        _ok(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {o: self._host[o].copy() for o in self._out_names}

    def _close_impl(self) -> None:
        rt = self._rt
        for p in self._dev.values():
            rt.cudaFree(p)
        for p in self._host_ptr.values():
            rt.cudaFreeHost(p)
        rt.cudaStreamDestroy(self._stream)
        del self._ctx, self._engine, self._runtime

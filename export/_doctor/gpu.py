"""``sonoedge doctor --gpu``'s GPU validation: what the machine lacks for it, and the CUDA kernels
against the C++ kernels through cuda-python device buffers."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np

from export._doctor.checks import check_export_tools, check_nvidia_smi
from export._doctor.common import (
    CUDA_PYTHON_FIX,
    DRIVER_FIX,
    EXPORT_FIX,
    FAIL,
    KERNEL_SEED,
    OK,
    TRT_FIX,
    Check,
    _kernel_inputs,
)
from export._doctor.compare import array_diff, mask_mismatch
from sdk.errors import BackendUnavailableError, SDKError

# --------------------------------------------------------------------------- --gpu preflight


def gpu_missing() -> list[tuple[str, str, str]]:
    """What ``--gpu`` needs and this machine lacks: ``[(what, why, fix)]``, empty when ready
    (TensorRT >= 10.3, cuda-python with a CUDA device, and the export tools)."""
    from sdk.backends.trt_common import cudart, trt_module

    missing: list[tuple[str, str, str]] = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append(("TensorRT >= 10.3", "not installed", TRT_FIX))
    else:
        try:
            trt_module()
        except BackendUnavailableError as exc:
            missing.append(("TensorRT >= 10.3", str(exc).splitlines()[0], TRT_FIX))
        except Exception as exc:  # a broken install (missing libnvinfer, ...)
            missing.append(("TensorRT >= 10.3", f"import fails: {exc}", TRT_FIX))
    try:
        rt = cudart()
    except BackendUnavailableError:
        missing.append(("cuda-python", "not installed", CUDA_PYTHON_FIX))
        smi = check_nvidia_smi()
        if smi.status != OK:
            missing.append(("an NVIDIA GPU", smi.detail, DRIVER_FIX))
    else:
        err, n = rt.cudaGetDeviceCount()
        if int(err) != 0 or int(n) == 0:
            why = getattr(err, "name", str(err)) if int(err) != 0 else "0 devices"
            missing.append(("an NVIDIA GPU", f"no CUDA device visible ({why})", DRIVER_FIX))
    tools = check_export_tools()
    if tools.status != OK:
        missing.append(("export tools", tools.detail, EXPORT_FIX))
    return missing


# --------------------------------------------------------------------------- CUDA kernels


class _Device:
    """Device buffers through cuda-python (no CuPy / torch needed); freed by :meth:`close`."""

    def __init__(self) -> None:
        from sdk.backends.trt_common import cudart

        self.rt = cudart()
        self._ptrs: list[int] = []

    def _ok(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise SDKError(f"{what} failed: CUDA error {getattr(err, 'name', err)}")
        return rest[0] if len(rest) == 1 else None

    def alloc(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """An uninitialized-looking buffer: every byte 0xFF (NaN in float, 255 in uint8), so an
        element the kernel forgets to write fails the comparison."""
        from sdk.kernels.cuda import DeviceArray

        dt = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * dt.itemsize, 1)
        ptr = int(self._ok(self.rt.cudaMalloc(nbytes), "cudaMalloc"))
        self._ptrs.append(ptr)
        self._ok(self.rt.cudaMemset(ptr, 0xFF, nbytes), "cudaMemset")
        return DeviceArray(ptr, tuple(shape), dt)

    def put(self, a: np.ndarray) -> Any:
        """Copy a host array to a new device buffer."""
        a = np.ascontiguousarray(a)
        d = self.alloc(a.shape, a.dtype)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpy(d.ptr, a.ctypes.data, a.nbytes, kind), "cudaMemcpy H2D")
        return d

    def get(self, d: Any) -> np.ndarray:
        """Wait for the device, then copy a device buffer back."""
        self._ok(self.rt.cudaDeviceSynchronize(), "kernel launch (cudaDeviceSynchronize)")
        out = np.empty(d.shape, d.dtype)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpy(out.ctypes.data, d.ptr, out.nbytes, kind), "cudaMemcpy D2H")
        return out

    def close(self) -> None:
        for p in self._ptrs:
            self.rt.cudaFree(p)
        self._ptrs.clear()


def cuda_kernel_cases(
    frames: Sequence[tuple[np.ndarray, np.ndarray]], seed: int = KERNEL_SEED
) -> list[dict[str, Any]]:
    """The CUDA kernels against the C++ kernels on phantom frames: ``[{case, max_abs,
    tolerance}]``, worst over the frames (tolerances of ``tests/kernels/test_cuda.py``)."""
    import sdk.kernels as K
    from sdk.kernels import cuda
    from sdk.kernels.reference import postprocess_mask_prob

    cuda._require_cuda()  # BackendUnavailableError without a CUDA build / device
    worst: dict[str, dict[str, Any]] = {}

    def add(case: str, value: float, tol: float) -> None:
        w = worst.setdefault(case, {"case": case, "max_abs": 0.0, "tolerance": tol})
        w["max_abs"] = max(w["max_abs"], value)

    dev = _Device()
    try:
        for i, (image, mask) in enumerate(frames):
            h, w = image.shape[:2]
            chans = K.CHANNELS  # all four
            kw = {"channels": chans, "sigma": 1.3, "mean": 0.2, "std": 0.5}
            out = dev.alloc((4, 256, 256), np.float32)
            cuda.preprocess(dev.put(image), out, **kw)
            add(
                "preprocess gray -> 4x256x256 f32",
                array_diff(dev.get(out), K.preprocess(image, size=(256, 256), **kw)),
                1e-5,
            )
            bgr = np.ascontiguousarray(
                np.stack(
                    [image, (image * 0.9).astype(np.uint8), (image * 0.8).astype(np.uint8)], axis=-1
                )
            )
            roi = (w // 10, h // 10, w * 8 // 10, h * 8 // 10)
            out16 = dev.alloc((2, 224, 224), np.float16)
            cuda.preprocess(dev.put(bgr), out16, roi=roi, color="rgb", sigma=2.0)
            ref16 = K.preprocess(bgr, size=(224, 224), roi=roi, color="rgb", sigma=2.0)
            add(
                "preprocess RGB + ROI -> 2x224x224 f16",
                array_diff(dev.get(out16).astype(np.float32), ref16),
                2e-3,
            )
            inp = _kernel_inputs(mask, seed + i)
            k = inp["k"]
            head = K.MLPHead(*inp["head"])
            ref = K.pool_classify(inp["features"], inp["weights"], inp["labels"], k, head)
            pooled = dev.alloc((k + 1, 16), np.float32)
            logits = dev.alloc((k + 1, 3), np.float32)
            probs = dev.alloc((k + 1, 3), np.float32)
            cuda.pool_classify(
                dev.put(inp["features"]),
                dev.put(inp["weights"]),
                probs,
                labels=dev.put(inp["labels"]),
                num_labels=k,
                head=tuple(dev.put(a) for a in inp["head"]),
                pooled=pooled,
                logits=logits,
            )
            add("pool + head: pooled", array_diff(dev.get(pooled), ref.pooled), 1e-4)
            add("pool + head: logits", array_diff(dev.get(logits), ref.logits), 1e-4)
            add("pool + head: probs", array_diff(dev.get(probs), ref.probs), 1e-5)
            for r in (None, (w // 8, h // 8, w * 3 // 4, h * 3 // 4)):
                m = dev.alloc((h, w), np.uint8)
                cuda.postprocess_mask(dev.put(inp["logits"]), m, roi=r)
                got = dev.get(m)
                _, prob = postprocess_mask_prob(inp["logits"], (h, w), r, 0.5)
                cpu = K.postprocess_mask(inp["logits"], (h, w), roi=r)
                tag = "ROI" if r else "full frame"
                add(
                    f"mask post-process ({tag}; pixels off)",
                    float(mask_mismatch(got, cpu, prob, 0.5)),
                    0.0,
                )
    finally:
        dev.close()
    return list(worst.values())


def _kernel_check(case: dict[str, Any]) -> Check:
    """A CUDA kernel case of :func:`cuda_kernel_cases` as a required check."""
    v, tol = case["max_abs"], case["tolerance"]
    ok = v <= tol
    return Check(
        f"CUDA {case['case']}",
        OK if ok else FAIL,
        f"max abs diff vs C++ {v:.3g} {'<=' if ok else '>'} {tol:g}",
        ""
        if ok
        else "the CUDA kernel disagrees with the C++ one: report it with "
        "`sonoedge info --json` and the nvidia-smi output",
        True,
        "cuda kernels",
        dict(case),
    )

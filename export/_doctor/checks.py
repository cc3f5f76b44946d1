"""``sonoedge doctor``'s environment checks: one :class:`Check` per component (OK / MISSING /
FAIL, each with its fix); :func:`export.doctor.environment_report` runs them all."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from export._doctor.common import (
    CUDA_BUILD_FIX,
    CUDA_PYTHON_FIX,
    DICOM_DECODERS,
    DICOM_FIX,
    DRIVER_FIX,
    EXPORT_FIX,
    FAIL,
    KERNEL_SEED,
    MISSING,
    OK,
    SELFTEST_SEED,
    TRT_FIX,
    Check,
    _kernel_inputs,
    _version,
)
from export._doctor.compare import array_diff, mask_mismatch
from sdk.errors import BackendUnavailableError

# --------------------------------------------------------------------------- environment


def check_version() -> Check:
    """sonoedge's version, Python and NumPy, and where the package was imported from."""
    import sdk

    where = Path(sdk.__file__).resolve().parent
    return Check(
        "sonoedge",
        OK,
        f"{sdk.__version__} (python {platform.python_version()}, numpy {np.__version__}) "
        f"from {where}",
        required=True,
    )


def check_cpp_kernels() -> Check:
    """The compiled module ``sdk._kernels`` and its OpenMP / CUDA build flags."""
    try:
        from sdk import _kernels
    except ImportError as exc:
        return Check(
            "C++ kernels",
            FAIL,
            f"sdk._kernels cannot be imported: {exc}",
            "reinstall from source: pip install . (a C++17 compiler and CMake >= 3.18)",
            True,
        )
    from sdk import cpu as _cpu
    from sdk import kernels

    cuda = "built with CUDA" if kernels.built_with_cuda() else "built without CUDA"
    isa = kernels.cpu_isa()
    return Check(
        "C++ kernels",
        OK,
        f"{Path(_kernels.__file__).name}, OpenMP up to {int(_kernels.openmp_max_threads())} "
        f"threads, {cuda}; CPU path: {isa['active']} (runs {', '.join(isa['supported'])}) on "
        f"{_cpu.cpu_model()} [{_cpu.cpu_class()}]",
        required=True,
        values={
            "built_with_cuda": bool(kernels.built_with_cuda()),
            "cpu_isa": isa["active"],
            "cpu_isa_supported": isa["supported"],
            "cpu_class": _cpu.cpu_class(),
            "cpu_model": _cpu.cpu_model(),
        },
    )


def check_cuda_kernels() -> Check:
    """CUDA kernels compiled into ``sdk._kernels`` and a device for them."""
    from sdk import kernels

    if not kernels.built_with_cuda():
        return Check(
            "CUDA kernels",
            MISSING,
            "sdk._kernels was built without CUDA (nvcc was not found at build time)",
            CUDA_BUILD_FIX,
        )
    n = kernels.cuda_device_count()
    if n == 0:
        return Check(
            "CUDA kernels",
            MISSING,
            "compiled in, but no CUDA device is visible to them",
            DRIVER_FIX,
            values={"devices": 0},
        )
    return Check("CUDA kernels", OK, f"compiled in, {n} CUDA device(s)", values={"devices": n})


def cpu_kernel_cases(
    image: np.ndarray, mask: np.ndarray, seed: int = KERNEL_SEED
) -> list[dict[str, Any]]:
    """The C++ kernels against the NumPy reference on one phantom: ``[{case, max_abs,
    tolerance}]`` (tolerances of ``tests/kernels``; the mask case counts pixels that differ away
    from the threshold)."""
    import sdk.kernels as K
    import sdk.kernels.reference as R

    chans = K.CHANNELS  # all four
    kw = {"size": (128, 128), "channels": chans, "sigma": 1.0, "mean": 0.2, "std": 0.5}
    cases = [
        {
            "case": "preprocess u8 -> 4x128x128 f32",
            "max_abs": array_diff(K.preprocess(image, **kw), R.preprocess(image, **kw)),
            "tolerance": 1e-5,
        }
    ]
    inp = _kernel_inputs(mask, seed)
    head = K.MLPHead(*inp["head"])
    args = (inp["features"], inp["weights"], inp["labels"], inp["k"], head)
    got, ref = K.pool_classify(*args), R.pool_classify(*args)
    for part, tol in (("pooled", 1e-4), ("logits", 1e-4), ("probs", 1e-5)):
        cases.append(
            {
                "case": f"pool + head {part} ({inp['k']} lesion(s))",
                "max_abs": array_diff(getattr(got, part), getattr(ref, part)),
                "tolerance": tol,
            }
        )
    shape = image.shape[:2]
    m = K.postprocess_mask(inp["logits"], shape)
    rm, prob = R.postprocess_mask_prob(inp["logits"], shape)
    cases.append(
        {
            "case": f"mask post-process 64x64 -> {shape[0]}x{shape[1]} (pixels off)",
            "max_abs": float(mask_mismatch(m, rm, prob, 0.5)),
            "tolerance": 0.0,
        }
    )
    return cases


def check_cpu_selftest() -> Check:
    """C++ kernels == NumPy reference on one phantom frame."""
    from sdk import synthetic

    image, mask, _ = synthetic.phantom("benign", size=(240, 320), seed=SELFTEST_SEED)
    cases = cpu_kernel_cases(image, mask)
    bad = [c for c in cases if not c["max_abs"] <= c["tolerance"]]
    worst = max(cases, key=lambda c: c["max_abs"] / (c["tolerance"] or 1.0))
    if bad:
        return Check(
            "CPU kernels vs NumPy",
            FAIL,
            "; ".join(f"{c['case']}: {c['max_abs']:.3g} > {c['tolerance']:g}" for c in bad),
            "the compiled kernels compute wrong results here: rebuild with SONOEDGE_NATIVE=OFF "
            "pip install . and report the machine (sonoedge info --json)",
            True,
            values={"cases": cases},
        )
    return Check(
        "CPU kernels vs NumPy",
        OK,
        f"{len(cases)} cases on a phantom within tolerance (closest: {worst['case']} "
        f"{worst['max_abs']:.2g} <= {worst['tolerance']:g})",
        required=True,
        values={"cases": cases},
    )


def check_onnxruntime() -> Check:
    """ONNX Runtime's version and execution providers."""
    if importlib.util.find_spec("onnxruntime") is None:
        return Check("ONNX Runtime", MISSING, "not installed", "pip install onnxruntime", True)
    import onnxruntime as ort

    providers = ort.get_available_providers()
    return Check(
        "ONNX Runtime",
        OK,
        f"{ort.__version__}; providers: {', '.join(providers)}",
        required=True,
        values={"version": ort.__version__, "providers": providers},
    )


def check_backends() -> list[Check]:
    """Every registered backend's ``sdk.backends.available()`` line (ONNX Runtime required)."""
    from sdk import backends

    out = []
    for name, (ok, why) in backends.available().items():
        required = name == "onnxruntime"
        if ok:
            out.append(Check(f"backend {name}", OK, why, required=required))
            continue
        absent = any(s in why for s in ("not installed", "cannot be imported", "no CUDA device"))
        fix = {"tensorrt": TRT_FIX, "onnxruntime": "pip install onnxruntime"}.get(name, "")
        if "cuda-python" in why:
            fix = CUDA_PYTHON_FIX
        elif "no CUDA device" in why or "cudaGetDeviceCount" in why:
            fix = DRIVER_FIX
        out.append(Check(f"backend {name}", MISSING if absent else FAIL, why, fix, required))
    return out


def check_nvidia_smi() -> Check:
    """The GPUs ``nvidia-smi`` lists (name, driver, memory)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return Check(
            "GPU (nvidia-smi)", MISSING, "nvidia-smi not found: no NVIDIA driver", DRIVER_FIX
        )
    q = "--query-gpu=name,driver_version,memory.total"
    try:
        r = subprocess.run(
            [exe, q, "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return Check("GPU (nvidia-smi)", FAIL, "nvidia-smi hung for 20 s", DRIVER_FIX)
    lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
    if r.returncode != 0 or not lines:
        why = (r.stderr or r.stdout).strip().splitlines()
        return Check(
            "GPU (nvidia-smi)",
            MISSING,
            f"no GPU listed: {why[0] if why else f'exit code {r.returncode}'}",
            DRIVER_FIX,
        )
    return Check("GPU (nvidia-smi)", OK, "; ".join(lines), values={"gpus": lines})


def _cuda_device_names(rt: Any, n: int) -> list[str]:
    names = []
    for i in range(n):
        err, prop = rt.cudaGetDeviceProperties(i)
        if int(err) != 0:
            names.append(f"device {i} (properties: {getattr(err, 'name', err)})")
            continue
        nm = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
        names.append(f"{nm.strip(chr(0) + ' ')} (sm_{prop.major}{prop.minor})")
    return names


def check_cuda_python() -> Check:
    """cuda-python and the CUDA devices it sees (what the TensorRT backend uses)."""
    from sdk.backends.trt_common import cudart

    try:
        rt = cudart()
    except BackendUnavailableError as exc:
        return Check("GPU (cuda-python)", MISSING, str(exc), CUDA_PYTHON_FIX)
    ver = _version("cuda-python") or _version("cuda-bindings") or "?"
    err, n = rt.cudaGetDeviceCount()
    if int(err) != 0 or int(n) == 0:
        why = getattr(err, "name", str(err)) if int(err) != 0 else "0 devices"
        return Check(
            "GPU (cuda-python)", MISSING, f"cuda-python {ver}: no CUDA device ({why})", DRIVER_FIX
        )
    names = _cuda_device_names(rt, int(n))
    _, drv = rt.cudaDriverGetVersion()
    _, rtv = rt.cudaRuntimeGetVersion()

    def cuda_ver(v: Any) -> str:
        v = int(v)
        return f"{v // 1000}.{(v % 1000) // 10}"

    return Check(
        "GPU (cuda-python)",
        OK,
        f"cuda-python {ver}; {', '.join(names)}; driver CUDA {cuda_ver(drv)}, runtime "
        f"{cuda_ver(rtv)}",
        values={"devices": names},
    )


def check_torch_cuda() -> Check:
    """torch and ``torch.cuda`` (optional: CUDA training and the GPU benchmark rows)."""
    if importlib.util.find_spec("torch") is None:
        return Check(
            "GPU (torch.cuda)",
            MISSING,
            "torch not installed (optional: training, export, GPU benchmark rows)",
            EXPORT_FIX,
        )
    import torch

    build = "CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
    if not torch.cuda.is_available():
        fix = DRIVER_FIX
        if torch.version.cuda is None:
            fix = "for CUDA training install a CUDA build of torch (pytorch.org); optional"
        return Check(
            "GPU (torch.cuda)", MISSING, f"torch {torch.__version__} ({build}): no CUDA device", fix
        )
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return Check("GPU (torch.cuda)", OK, f"torch {torch.__version__} ({build}); {', '.join(names)}")


def check_tensorrt() -> Check:
    """TensorRT importable and >= 10.3 (JetPack 6)."""
    from sdk.backends.trt_common import trt_module

    if importlib.util.find_spec("tensorrt") is None:
        return Check("TensorRT", MISSING, "not installed", TRT_FIX)
    try:
        trt = trt_module()
    except BackendUnavailableError as exc:
        return Check(
            "TensorRT", FAIL, str(exc).splitlines()[0], "pip install -U 'tensorrt>=10.3,<12'"
        )
    return Check(
        "TensorRT", OK, f"{trt.__version__} (>= 10.3)", values={"version": trt.__version__}
    )


def check_export_tools() -> Check:
    """What ``--gpu`` needs to make the engines' graphs: onnx, onnxconverter-common and ONNX
    Runtime's quantizer."""
    mods = {
        "onnx": "onnx",
        "onnxconverter_common": "onnxconverter-common",
        "onnxruntime.quantization": "onnxruntime",
    }
    missing = []
    for mod, dist in mods.items():
        try:
            found = importlib.util.find_spec(mod) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(dist)
    if missing:
        return Check(
            "export tools",
            MISSING,
            f"{', '.join(missing)} not installed (needed by --gpu to build engines)",
            EXPORT_FIX,
        )
    vers = ", ".join(f"{d} {_version(d) or '?'}" for d in ("onnx", "onnxconverter-common"))
    return Check("export tools", OK, f"{vers} (FP16 cast, INT8 Q/DQ for engine builds)")


def check_dicom() -> Check:
    """DICOM sources (``sonoedge run file.dcm``): pydicom and the pylibjpeg decoders, which
    come with the ``data`` extra. Optional: videos and image folders need neither."""
    if importlib.util.find_spec("pydicom") is None:
        return Check(
            "DICOM",
            MISSING,
            "pydicom not installed: .dcm sources cannot be read (videos, images can)",
            DICOM_FIX,
        )
    have = [mod for mod in DICOM_DECODERS if importlib.util.find_spec(mod) is not None]
    missing = [DICOM_DECODERS[mod][0] for mod in DICOM_DECODERS if mod not in have]
    values = {"pydicom": _version("pydicom"), "decoders": have, "missing": missing}
    head = f"pydicom {values['pydicom'] or '?'}"
    if missing:
        absent = [m for m in DICOM_DECODERS if m not in have]
        lost = [DICOM_DECODERS[m][1] for m in absent if m in ("libjpeg", "openjpeg")]
        if "pylibjpeg" in absent:  # the host of the other plugins: none of them is used
            lost = ["JPEG, JPEG-LS", "JPEG 2000"]
        what = f"{' / '.join(lost)} cines cannot be read" if lost else "RLE decodes slower"
        return Check(
            "DICOM",
            MISSING,
            f"{head}; decoders missing: {', '.join(missing)} ({what}; uncompressed and RLE "
            "cines can be read)",
            DICOM_FIX,
            values=values,
        )
    return Check(
        "DICOM",
        OK,
        f"{head}; decoders: JPEG, JPEG-LS, JPEG 2000, RLE ({', '.join(have)})",
        values=values,
    )


def check_model(path: str | os.PathLike[str] | None = None) -> Check:
    """An artifact (default: the embedded model) loads and runs one phantom frame."""
    import sdk
    from sdk import metrics, synthetic
    from sdk.analyzer import default_model

    p = default_model() if path is None else Path(path)
    name = "default model" if path is None else "model"
    image, truth, _ = synthetic.phantom("malignant", size=(480, 640), seed=SELFTEST_SEED)
    with sdk.Analyzer(p, threads=1) as a:
        a.run(image)  # first call: allocations, session warm-up
        r = a.run(image)
        md = a.metadata
    dice = metrics.dice(r.mask > 0, truth > 0)
    return Check(
        name,
        OK,
        f"{p.name} ({md.arch}, {md.precision}, {'x'.join(map(str, md.input_size))} "
        f"{'+'.join(md.channels)}): phantom 480x640 -> label {r.label}, {len(r.lesions)} "
        f"lesion(s), Dice vs truth {dice:.2f}, {r.timings['total']:.1f} ms",
        required=True,
        values={"path": str(p), "label": r.label, "dice": dice, "ms": r.timings["total"]},
    )

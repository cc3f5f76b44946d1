"""``sonoedge bench kernels``: the hot-path kernels against the same work done by the usual tools.

CPU rows (always): fused preprocess vs the OpenCV pipeline (resize + convert + two sepFilter2D +
magnitude + stack) and vs a SciPy pipeline; gradient magnitude vs SciPy; mask-guided pooling +
head vs NumPy; mask post-process vs OpenCV. Same thread count for OpenCV and our kernels.

GPU rows (when the CUDA kernels and CuPy are present): the CUDA preprocess vs the CuPy
(``cupyx.scipy.ndimage``) pipeline and vs torch (interpolate + conv2d), next to the empty-launch
floor; timed with CUDA events over many back-to-back launches.

Each anchor computes the same quantities (checked before timing), so the ratio compares equal work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sdk import kernels as K
from sdk.bench.timing import Row, Table, compare, machine_info, summarize
from sdk.kernels import reference as R

__all__ = ["cpu_suite", "gpu_suite", "opencv_preprocess", "run"]


def opencv_preprocess(frame: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """The pipeline an engineer writes with OpenCV: the anchor of the preprocess benchmark.

    uint8 INTER_AREA resize (OpenCV's fastest, fixed-point), scale to float32 [0, 1], Gaussian
    derivative by two separable filters with replicated borders, magnitude, planar stack.
    """
    import cv2

    g0, g1 = (k.astype(np.float32) for k in R.gaussian_kernels(sigma))
    if frame.ndim == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    img = np.multiply(small, np.float32(1.0 / 255.0), dtype=np.float32)
    gx = cv2.sepFilter2D(img, cv2.CV_32F, g1, g0, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.sepFilter2D(img, cv2.CV_32F, g0, g1, borderType=cv2.BORDER_REPLICATE)
    return np.stack([img, cv2.magnitude(gx, gy)])


def scipy_preprocess(frame: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """The same with SciPy: bilinear zoom (half-pixel grid) + gaussian_gradient_magnitude."""
    from scipy import ndimage as ndi

    f = frame.astype(np.float32) * np.float32(1.0 / 255.0)
    img = ndi.zoom(
        f, (size[0] / f.shape[0], size[1] / f.shape[1]), order=1, grid_mode=True, mode="nearest"
    )
    mag = ndi.gaussian_gradient_magnitude(img, sigma, mode="nearest", truncate=4.0)
    return np.stack([img, mag])


def _numpy_pool_classify(
    feats: np.ndarray,
    w: np.ndarray,
    labels: np.ndarray,
    k: int,
    head: K.MLPHead,
    ay: np.ndarray,
    ax: np.ndarray,
) -> np.ndarray:
    """NumPy anchor of pooling + head: features upsampled by matrix products, then pooled."""
    up = ay @ feats @ ax.T  # (F, hm, wm)
    rows = np.concatenate([w[None], w[None] * (labels[None] == np.arange(1, k + 1)[:, None, None])])
    flat = rows.reshape(k + 1, -1)
    pooled = flat @ up.reshape(up.shape[0], -1).T / (flat.sum(axis=1, keepdims=True) + 1e-6)
    hidden = np.maximum(pooled @ head.w1.T + head.b1, 0)
    logits = hidden @ head.w2.T + head.b2
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _row(name: str, cand: str, anchor: str | None, t: dict[str, np.ndarray], note: str = "") -> Row:
    med, p90 = summarize(t[cand])
    amed = summarize(t[anchor])[0] if anchor else None
    return Row(name, cand, anchor, med, p90, amed, note)


def cpu_suite(
    threads: int = 1,
    repeat: int = 200,
    frame_shape: tuple[int, int] = (600, 800),
    size: tuple[int, int] = (256, 256),
    sigma: float = 1.0,
    seed: int = 0,
) -> list[Row]:
    """All CPU rows. OpenCV is limited to ``threads`` as well (``cv2.setNumThreads``)."""
    import cv2

    rng = np.random.default_rng(seed)
    prev_threads = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    rows: list[Row] = []
    try:
        from sdk import synthetic

        frame, mask, _ = synthetic.phantom("malignant", size=frame_shape, seed=seed)
        frame_bgr = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)

        # Same work, checked: image within uint8 rounding of the resize, gdm within that too.
        ours = K.preprocess(frame, size=size, sigma=sigma, threads=threads)
        theirs = opencv_preprocess(frame, size, sigma)
        if np.abs(ours - theirs).max() > 4.0 / 255.0:
            raise RuntimeError("OpenCV anchor disagrees with the kernel: benchmark invalid")

        fns: dict[str, Callable[[], Any]] = {
            "sonoedge C++": lambda: K.preprocess(frame, size=size, sigma=sigma, threads=threads),
            "OpenCV pipeline": lambda: opencv_preprocess(frame, size, sigma),
        }
        try:
            import scipy  # noqa: F401

            fns["SciPy pipeline"] = lambda: scipy_preprocess(frame, size, sigma)
        except ImportError:
            pass
        t = compare(fns, repeat=repeat)
        name = f"preprocess {frame_shape[0]}×{frame_shape[1]} u8 → 2×{size[0]}×{size[1]} f32"
        rows.append(_row(name, "sonoedge C++", "OpenCV pipeline", t, f"{threads} thread(s)"))
        if "SciPy pipeline" in t:
            rows.append(_row(name, "sonoedge C++", "SciPy pipeline", t, "SciPy single-threaded"))

        t = compare(
            {
                "sonoedge C++": lambda: K.preprocess(
                    frame_bgr, size=size, sigma=sigma, threads=threads, dtype=np.float16
                ),
                "OpenCV pipeline": lambda: opencv_preprocess(frame_bgr, size, sigma).astype(
                    np.float16
                ),
            },
            repeat=repeat,
        )
        rows.append(
            _row(
                f"preprocess BGR {frame_shape[0]}×{frame_shape[1]}×3 → 2×{size[0]}×{size[1]} f16",
                "sonoedge C++",
                "OpenCV pipeline",
                t,
                f"{threads} thread(s)",
            )
        )

        img = K.preprocess(frame, size=size, channels=("image",))[0]
        try:
            from scipy import ndimage as ndi

            t = compare(
                {
                    "sonoedge C++": lambda: K.gaussian_gradient_magnitude(
                        img, sigma, threads=threads
                    ),
                    "scipy.ndimage": lambda: ndi.gaussian_gradient_magnitude(
                        img, sigma, mode="nearest", truncate=4.0
                    ),
                },
                repeat=repeat,
            )
            rows.append(
                _row(
                    f"gradient magnitude {size[0]}×{size[1]} f32",
                    "sonoedge C++",
                    "scipy.ndimage",
                    t,
                )
            )
        except ImportError:
            pass

        F, hf, wf = 32, size[0] // 4, size[1] // 4
        feats = rng.standard_normal((F, hf, wf)).astype(np.float32)
        small_mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        weights = np.clip(
            small_mask.astype(np.float32) * 0.9 + rng.random(size, np.float32) * 0.1, 0, 1
        )
        n, labels = cv2.connectedComponents((small_mask > 0).astype(np.uint8))
        labels = labels.astype(np.int32)
        k = n - 1
        head = K.MLPHead(
            rng.standard_normal((64, F)) * 0.1,
            np.zeros(64),
            rng.standard_normal((3, 64)) * 0.1,
            np.zeros(3),
        )
        ay = R.resize_matrix(size[0], hf, "linear").astype(np.float32)
        ax = R.resize_matrix(size[1], wf, "linear").astype(np.float32)
        ref = _numpy_pool_classify(feats, weights, labels, k, head, ay, ax)
        got = K.pool_classify(feats, weights, labels, k, head).probs
        if np.abs(ref - got).max() > 1e-4:
            raise RuntimeError("NumPy pooling anchor disagrees with the kernel: benchmark invalid")
        t = compare(
            {
                "sonoedge C++": lambda: K.pool_classify(feats, weights, labels, k, head),
                "NumPy": lambda: _numpy_pool_classify(feats, weights, labels, k, head, ay, ax),
            },
            repeat=repeat,
        )
        rows.append(
            _row(
                f"mask-guided pool + head F={F}@{hf}×{wf}, mask {size[0]}×{size[1]}, {k} lesion(s)",
                "sonoedge C++",
                "NumPy",
                t,
            )
        )

        H, W = frame_shape
        # Random logits (every row and column blended: the kernel's worst case), then a frame
        # with one lesion (the kernel blends only the rows / columns it can reach).
        grid = (size[0] // 4, size[1] // 4)
        lesion = cv2.resize(mask, grid[::-1], interpolation=cv2.INTER_NEAREST)
        lesion_logits = np.where(lesion > 0, 4.0, -4.0).astype(np.float32)
        lesion_logits += rng.standard_normal(grid).astype(np.float32)
        cases = [
            ("", (rng.standard_normal(grid) * 3).astype(np.float32)),
            (", one lesion", lesion_logits),
        ]
        for suffix, lg in cases:

            def cv_post(lg: np.ndarray = lg) -> np.ndarray:
                p = 1.0 / (1.0 + np.exp(-lg))
                return (cv2.resize(p, (W, H), interpolation=cv2.INTER_LINEAR) > 0.5).astype(
                    np.uint8
                )

            t = compare(
                {
                    "sonoedge C++": lambda lg=lg: K.postprocess_mask(lg, (H, W), threads=threads),
                    "OpenCV": cv_post,
                },
                repeat=repeat,
            )
            rows.append(
                _row(
                    f"mask post-process {grid[0]}×{grid[1]} → {H}×{W}{suffix}",
                    "sonoedge C++",
                    "OpenCV",
                    t,
                    f"{threads} thread(s)",
                )
            )

        def cv_components() -> list[np.ndarray]:
            p = 1.0 / (1.0 + np.exp(-lesion_logits))
            n, lab, _stats, _ = cv2.connectedComponentsWithStats(
                (p > 0.5).astype(np.uint8), connectivity=8
            )
            return [
                cv2.findContours(
                    (lab == i).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
                )[0][0]
                for i in range(1, n)
            ]

        t = compare(
            {
                "sonoedge C++": lambda: K.lesion_components(lesion_logits),
                "OpenCV + NumPy": cv_components,
            },
            repeat=repeat,
        )
        rows.append(
            _row(
                f"lesion components + borders {grid[0]}×{grid[1]}",
                "sonoedge C++",
                "OpenCV + NumPy",
                t,
            )
        )
    finally:
        cv2.setNumThreads(prev_threads)
    return rows


def gpu_suite(
    repeat: int = 20,
    launches: int = 200,
    frame_shape: tuple[int, int] = (600, 800),
    size: tuple[int, int] = (256, 256),
    sigma: float = 1.0,
) -> tuple[list[Row], str]:
    """CUDA rows, or ([], reason) when they cannot run here. Times are per frame, from CUDA
    events around ``launches`` back-to-back calls on one stream, median over ``repeat``."""
    from sdk.kernels import cuda

    if not cuda.available():
        return [], "CUDA kernels not built or no GPU visible"
    try:
        import cupy as cp
        from cupyx.scipy import ndimage as cndi
    except ImportError:
        return [], "CuPy not installed"

    stream = cp.cuda.Stream(non_blocking=True)
    rng = np.random.default_rng(0)
    frame = cp.asarray(rng.integers(0, 256, frame_shape, dtype=np.uint8))
    out = cp.empty((2, *size), cp.float32)
    out16 = cp.empty((2, *size), cp.float16)
    g0, g1 = (cp.asarray(k) for k in R.gaussian_kernels(sigma))

    def cupy_pipeline() -> Any:
        f = frame.astype(cp.float32) * (1.0 / 255.0)
        img = cndi.zoom(
            f,
            (size[0] / frame_shape[0], size[1] / frame_shape[1]),
            order=1,
            grid_mode=True,
            mode="nearest",
        )
        mag = cndi.gaussian_gradient_magnitude(img, sigma, mode="nearest", truncate=4.0)
        return cp.stack([img, mag])

    empty = cp.RawKernel(r'extern "C" __global__ void empty_kernel() {}', "empty_kernel")
    fns: dict[str, Callable[[], Any]] = {
        "sonoedge CUDA f32": lambda: cuda.preprocess(frame, out, sigma=sigma, stream=stream.ptr),
        "sonoedge CUDA f16": lambda: cuda.preprocess(frame, out16, sigma=sigma, stream=stream.ptr),
        "CuPy pipeline": cupy_pipeline,
        "empty launch": lambda: empty((1,), (1,), ()),
    }
    try:
        import torch
        import torch.nn.functional as tF

        tframe = torch.as_tensor(frame, device="cuda")
        k0 = torch.as_tensor(cp.asnumpy(g0), dtype=torch.float32, device="cuda")
        k1 = torch.as_tensor(cp.asnumpy(g1), dtype=torch.float32, device="cuda")
        r = (k0.numel() - 1) // 2
        kx = torch.stack([k1, k0]).view(2, 1, 1, -1)  # horizontal taps for gx, gy
        ky = torch.stack([k0, k1]).view(2, 1, -1, 1)  # vertical taps for gx, gy

        def torch_pipeline() -> Any:
            x = tframe.view(1, 1, *frame_shape).float() / 255.0
            img = tF.interpolate(x, size=size, mode="area")
            p = tF.pad(img, (r, r, r, r), mode="replicate").expand(1, 2, -1, -1)
            g = tF.conv2d(tF.conv2d(p, ky, groups=2), kx, groups=2)
            return torch.cat([img, torch.sqrt((g * g).sum(1, keepdim=True))], 1)

        fns["torch pipeline"] = torch_pipeline
    except ImportError:
        pass

    # Same work, checked against the CPU kernel first.
    cuda.preprocess(frame, out, sigma=sigma, stream=stream.ptr)
    stream.synchronize()
    ref = K.preprocess(cp.asnumpy(frame), size=size, sigma=sigma)
    err = float(np.abs(cp.asnumpy(out) - ref).max())
    if err > 1e-4:
        raise RuntimeError(f"CUDA preprocess disagrees with the CPU kernel by {err}")

    times: dict[str, list[float]] = {k: [] for k in fns}
    with stream:
        for fn in fns.values():  # warm-up: module load, plans, allocator pools
            for _ in range(10):
                fn()
        stream.synchronize()
        for _ in range(repeat):
            for name, fn in fns.items():
                start, end = cp.cuda.Event(), cp.cuda.Event()
                start.record(stream)
                for _ in range(launches):
                    fn()
                end.record(stream)
                end.synchronize()
                times[name].append(cp.cuda.get_elapsed_time(start, end) * 1e-3 / launches)
    t = {k: np.asarray(v) for k, v in times.items()}
    name = f"CUDA preprocess {frame_shape[0]}×{frame_shape[1]} u8 → 2×{size[0]}×{size[1]}"
    rows = [
        _row(name, "sonoedge CUDA f32", "CuPy pipeline", t),
        _row(name, "sonoedge CUDA f16", "CuPy pipeline", t),
    ]
    if "torch pipeline" in t:
        rows.append(_row(name, "sonoedge CUDA f32", "torch pipeline", t))
    rows.append(_row("empty kernel launch (floor)", "empty launch", None, t))
    dev = cp.cuda.runtime.getDeviceProperties(0)["name"]
    return rows, dev.decode() if isinstance(dev, bytes) else str(dev)


def run(threads: int = 1, repeat: int = 200, gpu: bool = True, command: str = "") -> Table:
    """The whole kernels benchmark as one table."""
    rows = cpu_suite(threads=threads, repeat=repeat)
    device = None
    if gpu:
        gpu_rows, device_or_reason = gpu_suite()
        if gpu_rows:
            rows += gpu_rows
            device = device_or_reason
        else:
            device = f"no GPU rows: {device_or_reason}"
    table = Table("Kernels", rows, machine_info(device), command)
    return table

"""Preprocess kernel: C++ == NumPy reference == OpenCV / SciPy, and every bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

import sdk.kernels as K
import sdk.kernels.reference as R
from sdk.errors import InputError

# Each test runs on every instruction-set variant this CPU supports (tests/kernels/conftest.py).
pytestmark = pytest.mark.usefixtures("each_cpu_isa")

SIZES = [(1, 1), (1, 17), (17, 1), (7, 13), (600, 800)]
OUT_SIZES = [(1, 1), (5, 3), (32, 48), (256, 256)]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.abs(b).max()), 1e-12)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max() / scale)


def test_built_flags_are_consistent() -> None:
    assert isinstance(K.built_with_cuda(), bool)
    n = K.cuda_device_count()
    assert n >= 0
    if not K.built_with_cuda():
        assert n == 0


@pytest.mark.parametrize("src", SIZES)
@pytest.mark.parametrize("dst", OUT_SIZES)
def test_cpp_equals_reference(rng: np.random.Generator, src, dst) -> None:
    frame = rng.integers(0, 256, src, dtype=np.uint8)
    chans = ("image", "gdm", "gdx", "gdy")
    a = K.preprocess(frame, size=dst, channels=chans, sigma=1.3)
    b = R.preprocess(frame, size=dst, channels=chans, sigma=1.3)
    assert a.shape == (4, *dst) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=2e-6, rtol=0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("src", "dst"),
    # The horizontal pass works on tiles of 16 outputs and groups of 4 rows: widths with a
    # partial last tile, heights with a partial last group, one-tile and many-tile rows.
    [
        ((600, 800), (128, 128)),
        ((600, 800), (129, 131)),
        ((480, 640), (7, 17)),
        ((33, 1000), (5, 15)),
    ],
)
def test_banded_resize_tails_match_reference(rng, src, dst, threads) -> None:
    frame = rng.integers(0, 256, src, dtype=np.uint8)
    a = K.preprocess(frame, size=dst, channels=("image", "gdm"), threads=threads)
    b = R.preprocess(frame, size=dst, channels=("image", "gdm"))
    np.testing.assert_allclose(a, b, atol=2e-6, rtol=0)


@pytest.mark.parametrize("interp", ["linear", "area"])
@pytest.mark.parametrize(
    ("src", "dst"), [((600, 800), (256, 256)), ((7, 13), (3, 5)), ((9, 9), (3, 3))]
)
def test_resize_matches_opencv(cv2_exact, rng, interp, src, dst) -> None:
    frame = rng.integers(0, 256, src, dtype=np.uint8)
    flag = {"linear": cv2_exact.INTER_LINEAR, "area": cv2_exact.INTER_AREA}[interp]
    ref = cv2_exact.resize(frame.astype(np.float32), dst[::-1], interpolation=flag) / 255.0
    got = K.preprocess(frame, size=dst, channels=("image",), interpolation=interp)[0]
    assert np.abs(got - ref).max() < 1e-6


@pytest.mark.parametrize(
    ("src", "dst"), [((600, 800), (700, 900)), ((7, 13), (20, 40)), ((1, 1), (4, 4))]
)
def test_upscale_matches_opencv_linear(cv2_exact, rng, src, dst) -> None:
    frame = rng.integers(0, 256, src, dtype=np.uint8)
    ref = cv2_exact.resize(
        frame.astype(np.float32), dst[::-1], interpolation=cv2_exact.INTER_LINEAR
    )
    got = K.preprocess(frame, size=dst, channels=("image",))[0]  # auto -> linear
    assert np.abs(got - ref / 255.0).max() < 1e-6


def test_color_conversion_matches_opencv(cv2_exact, rng) -> None:
    frame = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    gray = cv2_exact.cvtColor(frame.astype(np.float32), cv2_exact.COLOR_BGR2GRAY) / 255.0
    got = K.preprocess(frame, size=(61, 83), channels=("image",))[0]
    assert np.abs(got - gray).max() < 1e-6
    rgb = K.preprocess(frame[..., ::-1], size=(61, 83), channels=("image",), color="rgb")[0]
    assert np.abs(rgb - got).max() < 1e-6
    bgra = np.concatenate([frame, rng.integers(0, 256, (61, 83, 1), dtype=np.uint8)], axis=2)
    assert np.abs(K.preprocess(bgra, size=(61, 83), channels=("image",))[0] - got).max() < 1e-6


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 3.7])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 13), (256, 256)])
def test_gradient_magnitude_equals_scipy(rng, sigma, shape) -> None:
    img = rng.random(shape).astype(np.float32) * 255
    ref = ndi.gaussian_gradient_magnitude(
        img.astype(np.float64), sigma, mode="nearest", truncate=4.0
    )
    got = K.gaussian_gradient_magnitude(img, sigma)
    if np.abs(ref).max() == 0:  # 1x1: no gradient; float32 taps cancel to rounding only
        assert np.abs(got).max() <= 1e-6 * np.abs(img).max()
    else:
        assert rel_err(got, ref) < 1e-4
        assert rel_err(R.gaussian_gradient_magnitude(img, sigma), ref) < 1e-6


def test_gradient_channels_equal_scipy(cv2_exact, rng) -> None:
    frame = rng.integers(0, 256, (600, 800), dtype=np.uint8)
    out = K.preprocess(frame, channels=("gdm", "gdx", "gdy", "image"), sigma=1.5)
    img = (
        cv2_exact.resize(frame.astype(np.float32), (256, 256), interpolation=cv2_exact.INTER_AREA)
        / 255.0
    )
    img = img.astype(np.float64)
    gdm = ndi.gaussian_gradient_magnitude(img, 1.5, mode="nearest", truncate=4.0)
    gdx = ndi.gaussian_filter(img, 1.5, order=(0, 1), mode="nearest", truncate=4.0)
    gdy = ndi.gaussian_filter(img, 1.5, order=(1, 0), mode="nearest", truncate=4.0)
    assert rel_err(out[0], gdm) < 1e-4
    assert rel_err(out[1], gdx) < 1e-4
    assert rel_err(out[2], gdy) < 1e-4
    assert np.abs(out[3] - img).max() < 1e-6


def test_roi_normalization_and_out(rng) -> None:
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    roi = (10, 5, 100, 90)
    mean, std = (0.5, 0.1), (0.25, 0.05)
    out = np.full((2, 64, 64), np.nan, dtype=np.float32)
    res = K.preprocess(frame, size=(64, 64), roi=roi, mean=mean, std=std, out=out)
    assert res is out and np.isfinite(out).all()
    crop = np.ascontiguousarray(frame[5:95, 10:110])
    plain = K.preprocess(crop, size=(64, 64))
    np.testing.assert_allclose(out[0], (plain[0] - 0.5) / 0.25, atol=1e-5)
    np.testing.assert_allclose(out[1], (plain[1] - 0.1) / 0.05, atol=1e-4)
    np.testing.assert_allclose(
        out, R.preprocess(frame, size=(64, 64), roi=roi, mean=mean, std=std), atol=1e-5
    )


def test_non_contiguous_frames(rng) -> None:
    big = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    views = [
        big[::2, ::3],
        big[10:200, 50:350],
        big[:, :, 1],
        big[::-1],
        np.asfortranarray(big[..., 0]),
    ]
    for v in views:
        a = K.preprocess(v, size=(40, 50))
        b = K.preprocess(np.ascontiguousarray(v), size=(40, 50))
        # Contiguous gray rows take the vectorized integer-sum path, strided ones the per-row
        # float path: equal up to the last bit of float rounding.
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a, R.preprocess(v, size=(40, 50)), atol=2e-6)


@pytest.mark.parametrize("impl", [K, R], ids=["cpp", "numpy"])
def test_negative_stride_on_a_length_one_axis(impl, rng) -> None:
    """A flipped length-1 axis keeps its negative stride through np.ascontiguousarray (numpy
    calls the view contiguous); check_frame copies it, so the kernels accept it."""
    frame = rng.integers(0, 256, (5, 1), dtype=np.uint8)
    bgr = rng.integers(0, 256, (5, 1, 3), dtype=np.uint8)
    for v in (frame[:, ::-1], frame[:, ::-1, None], bgr[:, ::-1], frame.T[::-1]):
        assert min(v.strides) < 0 and np.ascontiguousarray(v).strides == v.strides
        np.testing.assert_array_equal(
            impl.preprocess(v, size=(4, 3)), impl.preprocess(v.copy(), size=(4, 3))
        )


def test_float16_output(rng) -> None:
    frame = rng.integers(0, 256, (600, 800), dtype=np.uint8)
    h = K.preprocess(frame, dtype=np.float16, mean=0.5, std=0.25)
    f = K.preprocess(frame, dtype=np.float32, mean=0.5, std=0.25)
    assert h.dtype == np.float16
    np.testing.assert_array_equal(h, f.astype(np.float16))  # same round-to-nearest-even


def test_threads_give_identical_results(rng) -> None:
    frame = rng.integers(0, 256, (600, 800), dtype=np.uint8)
    np.testing.assert_array_equal(K.preprocess(frame, threads=1), K.preprocess(frame, threads=2))


def test_one_channel_3d_frame_is_gray(rng) -> None:
    frame = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    np.testing.assert_array_equal(
        K.preprocess(frame[..., None], size=(8, 8)), K.preprocess(frame, size=(8, 8))
    )


BAD = [
    ({"frame": np.zeros((10, 10), np.float32)}, "frame must be uint8"),
    ({"frame": np.zeros((10,), np.uint8)}, "frame must be"),
    ({"frame": np.zeros((0, 10), np.uint8)}, "empty"),
    ({"frame": np.zeros((10, 10, 2), np.uint8)}, "channels"),
    ({"frame": [[1, 2], [3, 4]]}, "numpy.ndarray"),
    ({"sigma": -1.0}, "sigma"),
    ({"sigma": 0.0}, "sigma"),
    ({"sigma": float("nan")}, "sigma"),
    ({"sigma": 20.0}, "sigma"),
    ({"size": (0, 10)}, "size"),
    ({"size": (10,)}, "size"),
    ({"channels": ("image", "foo")}, "unknown channel"),
    ({"channels": ("image", "image")}, "repeat"),
    ({"channels": ()}, "channels"),
    ({"roi": (0, 0, 50, 50)}, "roi"),
    ({"roi": (5, 5, 0, 3)}, "roi"),
    ({"roi": (1, 2, 3)}, "roi"),
    ({"mean": (0.1, 0.2, 0.3)}, "mean"),
    ({"std": 0.0}, "std"),
    ({"std": (1.0, float("inf"))}, "std"),
    ({"dtype": np.int32}, "dtype"),
    ({"color": "hsv"}, "color"),
    ({"interpolation": "cubic"}, "interpolation"),
    ({"size": (64, 64), "interpolation": "area"}, "downscale"),
    ({"out": np.zeros((2, 16, 16), np.float64)}, "out"),
    ({"out": np.zeros((3, 16, 16), np.float32)}, "out"),
    ({"out": np.zeros((2, 16, 32), np.float32)[:, :, ::2]}, "out"),
    ({"threads": 0}, "threads"),
]


@pytest.mark.parametrize(("kwargs", "match"), BAD)
@pytest.mark.parametrize("impl", [K, R], ids=["cpp", "numpy"])
def test_bad_input_raises_input_error(impl, kwargs, match) -> None:
    args = {"frame": np.zeros((20, 30), np.uint8), "size": (16, 16)} | kwargs
    with pytest.raises(InputError, match=match):
        impl.preprocess(**args)


def test_gradient_magnitude_bad_input() -> None:
    with pytest.raises(InputError, match="image"):
        K.gaussian_gradient_magnitude(np.zeros((3, 3, 3), np.float32), 1.0)
    with pytest.raises(InputError, match="sigma"):
        K.gaussian_gradient_magnitude(np.zeros((3, 3), np.float32), -1.0)
    with pytest.raises(InputError, match="NaN"):
        K.gaussian_gradient_magnitude(np.full((3, 3), np.nan, np.float32), 1.0)
    with pytest.raises(InputError, match="empty"):
        K.gaussian_gradient_magnitude(np.zeros((0, 3), np.float32), 1.0)

"""The frame path's names and limits, defined once for the Python side.

The kernels' enums (``kernels/include/sonoedge/common.h``: ``Channel``, ``ColorOrder``,
``Interp``) are numbered by position in these tuples; the compiled module exports its own names
(``sdk._kernels.CHANNELS`` / ``COLORS`` / ``INTERPOLATIONS``) and ``tests/kernels`` holds the two
equal. Pure Python, so :mod:`sdk.artifact` validates metadata without the compiled kernels.
"""

from __future__ import annotations

__all__ = [
    "CHANNELS",
    "COLORS",
    "INTERPOLATIONS",
    "MAX_MEAN",
    "MAX_SIDE",
    "MAX_SIGMA",
    "MAX_STD",
    "MIN_STD",
]

#: Input channels, in ``sonoedge::Channel`` order: gray / 255 and Gaussian derivatives.
CHANNELS: tuple[str, ...] = ("image", "gdm", "gdx", "gdy")
#: Frame colour orders, in ``sonoedge::ColorOrder`` order.
COLORS: tuple[str, ...] = ("gray", "bgr", "rgb")
#: Resize modes, in ``sonoedge::Interp`` order.
INTERPOLATIONS: tuple[str, ...] = ("linear", "area")

MAX_SIGMA = 8.0  # radius int(4 sigma + 0.5) <= 32, the kernels' halo limit
MAX_SIDE = 16384
# Normalization: std within [MIN_STD, MAX_STD] and |mean| <= MAX_MEAN (== the bindings' bounds);
# std=1e-45 passes a finiteness check, but 1 / std overflows float32 and every pixel turns inf.
MIN_STD, MAX_STD, MAX_MEAN = 1e-6, 1e6, 1e6

"""argparse value types shared by the command lines (``sonoedge`` and its export commands)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["float_type", "int_type", "size_type"]


def size_type(min_side: int = 1, max_side: int | None = None) -> Callable[[str], tuple[int, int]]:
    """An argparse ``type`` for a size: ``"256"`` -> (256, 256), ``"256x320"`` -> (256, 320)
    (height x width), each side >= ``min_side`` (and <= ``max_side`` when given)."""
    need = f" with sides >= {min_side}" if min_side > 1 else ""
    if max_side is not None:
        need = f" with sides in {min_side}..{max_side}"

    def parse(text: str) -> tuple[int, int]:
        try:
            parts = [int(v) for v in text.lower().split("x")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
        if len(parts) == 1:
            parts *= 2
        too_big = max_side is not None and max(parts) > max_side
        if len(parts) != 2 or min(parts) < min_side or too_big:
            raise argparse.ArgumentTypeError(f"size must be N or HxW{need}, got {text!r}")
        return parts[0], parts[1]

    return parse


def int_type(
    lo: int | None = None, hi: int | None = None, what: str = "an integer"
) -> Callable[[str], int]:
    """An argparse ``type`` for an integer in ``[lo, hi]`` (either bound optional); a value
    outside it is a usage error (exit 2) that says the accepted range."""
    rng = _range_text(lo, hi)

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}{rng}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {what}{rng}, got {text!r}")
        return value

    return parse


def float_type(
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    what: str = "a number",
) -> Callable[[str], float]:
    """An argparse ``type`` for a finite float in ``[lo, hi]`` (``lo_open`` / ``hi_open``:
    exclude that end). NaN and infinities are refused: every float the CLIs take is a rate,
    a weight or a physical quantity."""
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    rng = (" " + " and ".join(parts)) if parts else ""
    noun = what[2:] if what.startswith("a ") else what

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}{rng}, got {text!r}") from None
        bad = not math.isfinite(value)
        if lo is not None:
            bad |= value <= lo if lo_open else value < lo
        if hi is not None:
            bad |= value >= hi if hi_open else value > hi
        if bad:
            raise argparse.ArgumentTypeError(f"expected a finite {noun}{rng}, got {text!r}")
        return value

    return parse


def _range_text(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""

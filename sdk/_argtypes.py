"""argparse value types shared by the command lines (``sonoedge`` and its export commands)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["size_type"]


def size_type(min_side: int = 1) -> Callable[[str], tuple[int, int]]:
    """An argparse ``type`` for a size: ``"256"`` -> (256, 256), ``"256x320"`` -> (256, 320)
    (height x width), each side >= ``min_side``."""
    need = f" with sides >= {min_side}" if min_side > 1 else ""

    def parse(text: str) -> tuple[int, int]:
        try:
            parts = [int(v) for v in text.lower().split("x")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
        if len(parts) == 1:
            parts *= 2
        if len(parts) != 2 or min(parts) < min_side:
            raise argparse.ArgumentTypeError(f"size must be N or HxW{need}, got {text!r}")
        return parts[0], parts[1]

    return parse

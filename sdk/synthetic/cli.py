"""``sonoedge phantom``: write a contact sheet of phantoms and a cine loop to look at.

Wire it with ``cli.add_parser(subparsers)`` then call ``cli.run(args)`` for the ``phantom``
command; ``run`` returns the process exit code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from sdk.argtypes import float_type, int_type, size_type
from sdk.errors import SDKError
from sdk.synthetic._api import cine, phantom
from sdk.synthetic._io import write_bytes_atomic, write_image_atomic

__all__ = ["add_parser", "contact_sheet", "run"]

_COLOURS = {"benign": (80, 220, 80), "malignant": (60, 60, 255), "normal": (200, 200, 200)}


_size = size_type(32, 4096)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``phantom`` sub-command on an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "phantom",
        help="write a contact sheet of synthetic B-mode phantoms and a cine loop",
        description="Simulate breast-ultrasound phantoms (normal / benign / malignant, linear and "
        "curvilinear probes) and write a PNG contact sheet with mask contours plus a cine loop.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument(
        "--seed", type=int_type(0, 2**32 - 1, "a seed"), default=0, help="master seed (default 0)"
    )
    p.add_argument("--size", type=_size, default=(256, 256), help="frame size N or HxW (256)")
    p.add_argument(
        "--per-class", type=int_type(1, 100), default=2, help="frames per class and probe (2)"
    )
    p.add_argument(
        "--frames", type=int_type(1, 2000), default=48, help="cine length in frames (48)"
    )
    p.add_argument(
        "--fps", type=float_type(0, 1000, lo_open=True), default=15.0, help="cine frame rate (15)"
    )
    p.add_argument(
        "--label",
        default="malignant",
        choices=("normal", "benign", "malignant"),
        help="class of the cine's lesion (malignant)",
    )
    p.add_argument(
        "--format",
        default="gif",
        choices=("gif", "mp4", "both"),
        help="cine container: animated GIF, MP4 (mp4v) or both (gif)",
    )
    p.add_argument(
        "--frequency", type=float_type(1.0, 30.0), default=None, help="probe frequency, MHz"
    )
    p.add_argument("--clutter", action="store_true", help="draw scanner text and calipers")
    p.set_defaults(handler=run)
    return p


def _annotate(image: np.ndarray, mask: np.ndarray, title: str, label: str) -> np.ndarray:
    """Grey frame -> BGR with lesion contours (colour by class) and a title."""
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    colour = _COLOURS[label]
    for lid in np.unique(mask[mask > 0]):
        contours, _ = cv2.findContours(
            (mask == lid).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(out, contours, -1, colour, 1, cv2.LINE_AA)
    scale = max(image.shape[1] / 600.0, 0.35)
    cv2.putText(
        out,
        title,
        (4, out.shape[0] - 6),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (0, 0, 0),
        3,
        cv2.LINE_AA,
    )
    cv2.putText(
        out, title, (4, out.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA
    )
    return out


def contact_sheet(
    size: tuple[int, int] = (256, 256), seed: int = 0, per_class: int = 2, **params: object
) -> np.ndarray:
    """BGR uint8 grid: rows linear / curvilinear, ``per_class`` columns per class."""
    rows = []
    k = 0
    for geometry in ("linear", "curvilinear"):
        tiles = []
        for label in ("normal", "benign", "malignant"):
            for _ in range(per_class):
                image, mask, info = phantom(label, size, seed + k, geometry=geometry, **params)
                k += 1
                kinds = ",".join(sorted({d["kind"] for d in info["lesions"]}))
                title = f"{label} {geometry[:3]}" + (f" {kinds}" if kinds else "")
                tiles.append(_annotate(image, mask, title, info["label"]))
        rows.append(np.hstack(tiles))
    return np.vstack(rows)


def _write_cine(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    if path.suffix == ".gif":
        anim = cv2.Animation()
        anim.frames = frames
        anim.durations = [round(1000.0 / fps)] * len(frames)
        anim.loop_count = 0
        ok, buf = cv2.imencodeanimation(".gif", anim)
        if not ok:
            raise SDKError(f"OpenCV could not encode the cine as GIF ({path})")
        write_bytes_atomic(path, buf.tobytes())
        return path
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h), True)
    if not writer.isOpened():
        raise SDKError(f"OpenCV has no MP4 (mp4v) writer here; use --format gif ({path})")
    try:
        for f in frames:
            writer.write(f)
    finally:
        writer.release()
    tmp.replace(path)
    return path


def run(args: argparse.Namespace) -> int:
    """Execute ``sonoedge phantom``; returns the exit code (0 ok, 2 bad input)."""
    params = {}
    if args.frequency is not None:
        params["frequency_mhz"] = args.frequency
    if args.clutter:
        params["clutter"] = True
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        sheet = contact_sheet(tuple(args.size), args.seed, args.per_class, **params)
        sheet_path = out / "phantoms.png"
        write_image_atomic(sheet_path, sheet)
        frames = []
        for image, mask, info in cine(
            args.frames, args.label, tuple(args.size), args.seed, fps=args.fps, **params
        ):
            title = f"#{info['frame']:03d} {info['label']}"
            frames.append(_annotate(image, mask, title, info["label"]))
        formats = ("gif", "mp4") if args.format == "both" else (args.format,)
        written = [_write_cine(frames, out / f"cine.{fmt}", args.fps) for fmt in formats]
    except SDKError as exc:
        print(f"sonoedge phantom: error: {exc}", file=sys.stderr)
        return 2
    print(f"contact sheet: {sheet_path}")
    for path in written:
        print(f"cine loop ({len(frames)} frames @ {args.fps:g} fps): {path}")
    return 0

"""Contact sheet: old (stylized) phantoms, new scanner-style phantoms and real ultrasound frames.

Run from the repository root::

    git worktree add /tmp/old_wt 4f9a86e   # the generator before the realism work
    python docs/contact_sheet.py --old /tmp/old_wt --out docs/phantoms-contact-sheet.png

Row 1: the old generator (``sdk.synthetic`` at 4f9a86e, default knobs). Rows 2-4: the new
``style="scanner"`` generator (normal, benign, malignant; random factors, seeds 0..5). Row 5:
real ultrasound frames from pydicom-data (not breast: a generic US phantom / abdomen, for the
look of speckle, processing and annotations only) and classic vs scanner of the same seed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

TILE = 176
N_COLS = 6
_OLD = """
import json, sys, numpy as np
from sdk import synthetic
out = []
for i, lab in enumerate(["normal", "benign", "malignant", "benign", "malignant", "benign"]):
    img, _, info = synthetic.phantom(lab, (256, 256), seed=i,
                                     geometry="curvilinear" if i == 4 else "linear")
    out.append(img)
np.save(sys.argv[1], np.stack(out))
"""


def _tile(img: np.ndarray, text: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if img.dtype != np.uint8:
        lo, hi = np.percentile(img, (0.5, 99.5))
        img = np.clip((img - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    h, w = img.shape
    s = TILE / max(h, w)
    small = cv2.resize(img, (max(int(w * s), 1), max(int(h * s), 1)), interpolation=cv2.INTER_AREA)
    tile = np.zeros((TILE + 14, TILE), np.uint8)
    y0, x0 = (TILE - small.shape[0]) // 2, (TILE - small.shape[1]) // 2
    tile[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    cv2.putText(tile, text[:30], (2, TILE + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.33, 255, 1)
    return tile


def _real_frames() -> list[tuple[np.ndarray, str]]:
    import data_store
    import pydicom

    root = Path(data_store.__file__).parent / "data"
    out = []
    for name in ("US1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm"):
        path = root / name
        if not path.is_file():
            continue
        arr = pydicom.dcmread(path).pixel_array
        if arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] != 3):
            arr = arr[0]
        out.append((arr, f"REAL {name[:18]}"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", type=Path, required=True, help="worktree of the old generator")
    ap.add_argument("--out", type=Path, default=Path("docs/phantoms-contact-sheet.png"))
    args = ap.parse_args()
    sys.path.insert(0, str(Path.cwd()))
    from sdk import synthetic

    tmp = Path("/tmp/old_phantoms.npy")
    subprocess.run(
        [sys.executable, "-c", _OLD, str(tmp)],
        cwd=args.old,
        env={"PYTHONPATH": str(args.old), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    rows = [[_tile(im, f"OLD seed {i}") for i, im in enumerate(np.load(tmp))]]
    notes = []
    for lab in ("normal", "benign", "malignant"):
        row = []
        for i in range(N_COLS):
            img, _, info = synthetic.phantom(lab, (256, 256), seed=i, style="scanner")
            f = info["factors"]
            les = info["lesions"][0] if info["lesions"] else {}
            text = f"NEW {lab[:3]} {f['frequency_mhz']:.0f}MHz c{f['compounding']}"
            if les:
                text += f" {les['margin'][:5]}/{les['posterior'][:4]}"
            row.append(_tile(img, text))
            notes.append({"label": lab, "seed": i, "factors": f, "lesions": info["lesions"]})
        rows.append(row)
    last = [_tile(a, t) for a, t in _real_frames()]
    for seed in (7, 8):
        img, _, _ = synthetic.phantom("malignant", (600, 800), seed=seed, style="scanner")
        last.append(_tile(img, f"NEW mal 600x800 s{seed}"))
    for seed in (9,):
        img, _, _ = synthetic.phantom(
            "benign", (600, 800), seed=seed, style="scanner", clutter=True
        )
        last.append(_tile(img, "NEW ben 600x800 clutter"))
    while len(last) < N_COLS:
        last.append(np.zeros_like(last[0]))
    rows.append(last[:N_COLS])
    sheet = np.vstack([np.hstack(r) for r in rows])
    cv2.imwrite(str(args.out), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    args.out.with_suffix(".json").write_text(json.dumps(notes, indent=1) + "\n")
    print(args.out, sheet.shape, args.out.stat().st_size, "bytes")


if __name__ == "__main__":
    main()

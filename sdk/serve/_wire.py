"""What `sonoedge serve` sends over the wire, shared by the server (numpy < 2, PyTriton's own
environment) and the client (:mod:`sdk.remote`, the main numpy-2 install): plain Python and
NumPy only.

The server runs the whole :class:`sdk.Analyzer` and ships the finished Result's fields, so the
client rebuilds the very Result a local Analyzer returns (mask exactly, the floats exactly: a
Python float survives ``json`` unchanged), with no model knowledge of its own:

* input ``frame``: UINT8 ``[H, W, C]`` (C = 1 for gray, 3 for colour), one frame per request;
* input ``options`` (optional): BYTES ``[1]``, a JSON object with ``roi`` / ``color`` /
  ``pixel_spacing_mm`` / ``timestamp`` (absent keys: the server Analyzer's defaults);
* output ``mask``: UINT8 ``[H, W]``, the Result's mask;
* output ``result``: BYTES ``[1]``, a JSON object with every other Result field (lesion contours
  as integer lists), see :func:`result_to_json`.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MODEL_NAME",
    "INPUT_FRAME",
    "INPUT_OPTIONS",
    "OUTPUT_MASK",
    "OUTPUT_RESULT",
    "deserialize_bytes",
    "error_to_json",
    "result_from_json",
    "result_to_json",
    "serialize_bytes",
]

DEFAULT_MODEL_NAME = "sonoedge"
INPUT_FRAME = "frame"
INPUT_OPTIONS = "options"
OUTPUT_MASK = "mask"
OUTPUT_RESULT = "result"
#: Bumped whenever the JSON below changes incompatibly; the client checks it.
WIRE_VERSION = 1


def result_to_json(r: Any) -> bytes:
    """Every field of a :class:`sdk.result.Result` but the mask (sent as its own tensor)."""
    d = {
        "wire": WIRE_VERSION,
        "label": r.label,
        "probs": r.probs,
        "raw_probs": r.raw_probs,
        "in_scope": bool(r.in_scope),
        "scope_score": r.scope_score,
        "roi": [int(v) for v in r.roi],
        "timestamp": r.timestamp,
        "timings": r.timings,
        "lesions": [
            {
                "id": int(les.id),
                "bbox": [int(v) for v in les.bbox],
                "area_px": float(les.area_px),
                "area_mm2": None if les.area_mm2 is None else float(les.area_mm2),
                "contour": np.asarray(les.contour).tolist(),
                "other_contours": [np.asarray(c).tolist() for c in les.other_contours],
                "label": les.label,
                "probs": les.probs,
                "raw_probs": les.raw_probs,
                "per_lesion": bool(les.per_lesion),
            }
            for les in r.lesions
        ],
    }
    return json.dumps(d, allow_nan=False).encode()


def error_to_json(e: BaseException) -> bytes:
    """A frame the server could not analyze: its error's kind and message (the request's
    ``result``; the mask tensor is then a 1×1 placeholder)."""
    from sdk.errors import InputError, ModelError, SDKError, SourceError

    kind = "other"
    for name, cls in (("input", InputError), ("model", ModelError), ("source", SourceError)):
        if isinstance(e, cls):
            kind = name
            break
    else:
        if isinstance(e, SDKError):
            kind = "sdk"
    d = {"wire": WIRE_VERSION, "error": {"kind": kind, "type": type(e).__name__, "message": str(e)}}
    return json.dumps(d).encode()


def raise_if_error(d: dict[str, Any], where: str) -> None:
    """Raise the ``sdk.errors`` error a server-side failure of this request stands for."""
    err = d.get("error")
    if not err:
        return
    from sdk.errors import InputError, ModelError, SDKError, SourceError

    cls = {"input": InputError, "model": ModelError, "source": SourceError}.get(
        err.get("kind"), SDKError
    )
    raise cls(f"{where}: the server refused the frame: {err.get('type')}: {err.get('message')}")


def result_from_json(
    data: bytes, mask: np.ndarray | None, frame_index: int, where: str = "server"
) -> Any:
    """The :class:`sdk.result.Result` of :func:`result_to_json` and the mask tensor (or the
    error of :func:`error_to_json`, raised)."""
    from sdk.result import Lesion, Result

    d = json.loads(data)
    raise_if_error(d, where)
    if d.get("wire") != WIRE_VERSION:
        raise ValueError(
            f"the server speaks wire version {d.get('wire')!r}, this client {WIRE_VERSION}"
        )
    lesions = [
        Lesion(
            id=le["id"],
            bbox=tuple(le["bbox"]),
            area_px=le["area_px"],
            contour=np.asarray(le["contour"], dtype=np.int32).reshape(-1, 2),
            label=le["label"],
            probs=le["probs"],
            per_lesion=le["per_lesion"],
            area_mm2=le["area_mm2"],
            raw_probs=le["raw_probs"],
            other_contours=[
                np.asarray(c, dtype=np.int32).reshape(-1, 2) for c in le["other_contours"]
            ],
        )
        for le in d["lesions"]
    ]
    return Result(
        mask=mask,
        label=d["label"],
        probs=d["probs"],
        lesions=lesions,
        frame_index=frame_index,
        timestamp=d["timestamp"],
        timings=d["timings"],
        roi=tuple(d["roi"]),
        raw_probs=d["raw_probs"],
        in_scope=d["in_scope"],
        scope_score=d["scope_score"],
    )


def serialize_bytes(items: list[bytes]) -> bytes:
    """KServe v2 / Triton binary form of a BYTES tensor: each element as a 4-byte little-endian
    length and its bytes."""
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def deserialize_bytes(buf: bytes, count: int | None = None) -> list[bytes]:
    """Inverse of :func:`serialize_bytes` (bounded: stops at the buffer's end)."""
    out: list[bytes] = []
    i = 0
    while i + 4 <= len(buf) and (count is None or len(out) < count):
        (n,) = struct.unpack_from("<I", buf, i)
        i += 4
        if i + n > len(buf):
            raise ValueError("truncated BYTES tensor")
        out.append(bytes(buf[i : i + n]))
        i += n
    return out

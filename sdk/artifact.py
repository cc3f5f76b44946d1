"""The deployable artifact: one versioned metadata schema, carried inside the file.

Everything a device needs travels in the artifact itself: class names, input size and channels,
normalization, Gaussian sigma, ROI policy, output roles, head weights, thresholds, provenance,
accuracy measured at export and, for TensorRT, the build fingerprint.

* ``.onnx``: the JSON lives in ``metadata_props["sonoedge"]`` (read back through ONNX Runtime's
  ``custom_metadata_map``, so the runtime needs no ``onnx`` package).
* ``.plan``: a small container around the serialized TensorRT engine::

      offset  size  field
      0       8     magic b"SONOPLAN"
      8       4     format version, uint32 little-endian (PLAN_FORMAT_VERSION)
      12      8     metadata length M, uint64 LE
      20      8     engine length E, uint64 LE
      28      32    SHA-256 of (metadata bytes + engine bytes)
      60      M     metadata, UTF-8 JSON
      60+M    E     serialized TensorRT engine

  Every length is checked against the file size before anything is read or allocated; the
  checksum is checked before the engine is handed to TensorRT. ``sonoedge info`` prints the
  metadata; ``sonoedge info --extract-plan`` writes the raw engine for ``trtexec``.

Nothing on a load path unpickles, and no path found in metadata is ever opened.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ModelError

__all__ = [
    "METADATA_KEY",
    "PLAN_FORMAT_VERSION",
    "PLAN_MAGIC",
    "SCHEMA_VERSION",
    "Metadata",
    "decode_array",
    "encode_array",
    "read_onnx_metadata",
    "read_plan",
    "write_plan",
]

SCHEMA = "sonoedge.artifact"
SCHEMA_VERSION = 1
METADATA_KEY = "sonoedge"
PLAN_MAGIC = b"SONOPLAN"
PLAN_FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQQ32s")  # magic, version, M, E, sha256
MAX_METADATA_BYTES = 64 * 1024 * 1024  # head weights included; far above any real model
_CHANNELS = ("image", "gdm", "gdx", "gdy")


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """float32 array -> JSON-safe dict (shape + base64 of little-endian bytes): exact, compact."""
    a = np.ascontiguousarray(a, dtype="<f4")
    return {
        "shape": list(a.shape),
        "dtype": "float32",
        "data": base64.b64encode(a.tobytes()).decode(),
    }


def decode_array(d: Any, name: str) -> np.ndarray:
    """Inverse of :func:`encode_array`, validating shape and size."""
    try:
        shape = tuple(int(s) for s in d["shape"])
        if d.get("dtype", "float32") != "float32":
            raise ValueError(f"dtype {d.get('dtype')!r}")
        raw = base64.b64decode(d["data"], validate=True)
        a = np.frombuffer(raw, dtype="<f4")
        if a.size != int(np.prod(shape)):
            raise ValueError(f"{a.size} values for shape {shape}")
        return a.reshape(shape).astype(np.float32)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"artifact metadata: {name} is not a valid encoded array ({e})") from e


@dataclass
class Metadata:
    """Validated artifact metadata (schema version :data:`SCHEMA_VERSION`).

    Construct through :meth:`from_dict` (validates) or directly when exporting, then
    :meth:`to_dict` / :meth:`to_json`.
    """

    arch: str
    class_names: tuple[str, ...]
    channels: tuple[str, ...]
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sigma: float = 1.0
    outputs: dict[str, str | None] = field(
        default_factory=lambda: {
            "mask_logits": "mask_logits",
            "class_logits": "class_logits",
            "features": None,
        }
    )
    head: dict[str, np.ndarray] | None = None
    mask_threshold: float = 0.5
    min_lesion_area_px: int = 16
    roi_policy: str = "full"  # "full": the whole frame; "fixed": roi_box; set per call otherwise
    roi_box: tuple[int, int, int, int] | None = None
    precision: str = "fp32"
    input_name: str = "input"
    provenance: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    tensorrt: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- (de)serialization ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "arch": self.arch,
            "class_names": list(self.class_names),
            "input": {
                "name": self.input_name,
                "channels": list(self.channels),
                "size": list(self.input_size),
                "mean": list(self.mean),
                "std": list(self.std),
                "sigma": self.sigma,
            },
            "outputs": dict(self.outputs),
            "head": None
            if self.head is None
            else {k: encode_array(v) for k, v in self.head.items()},
            "thresholds": {
                "mask": self.mask_threshold,
                "min_lesion_area_px": self.min_lesion_area_px,
            },
            "roi": {"policy": self.roi_policy, "box": list(self.roi_box) if self.roi_box else None},
            "precision": self.precision,
            "provenance": copy.deepcopy(self.provenance),
            "accuracy": copy.deepcopy(self.accuracy),
            "tensorrt": copy.deepcopy(self.tensorrt),
            "extra": copy.deepcopy(self.extra),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "artifact") -> Metadata:
        try:
            d = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelError(
                f"{source}: metadata is not valid JSON ({e}); re-export the model"
            ) from e
        return cls.from_dict(d, source)

    @classmethod
    def from_dict(cls, d: Any, source: str = "artifact") -> Metadata:
        """Validate a metadata dict; every problem names the field and the fix."""

        def fail(msg: str) -> ModelError:
            return ModelError(f"{source}: {msg}")

        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise fail(
                "not a sonoedge artifact (metadata 'schema' missing); export it with "
                "`sonoedge export`"
            )
        version = d.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise fail(f"metadata 'version' must be an integer, got {version!r}")
        if version > SCHEMA_VERSION:
            raise fail(
                f"metadata version {version} is newer than this sonoedge understands "
                f"({SCHEMA_VERSION}); upgrade sonoedge (pip install -U sonoedge)"
            )
        try:
            inp = d["input"]
            classes = tuple(str(c) for c in d["class_names"])
            channels = tuple(str(c) for c in inp["channels"])
            size = tuple(int(s) for s in inp["size"])
            mean = tuple(float(v) for v in inp["mean"])
            std = tuple(float(v) for v in inp["std"])
            outputs = dict(d["outputs"])
            arch = str(d["arch"])
        except (KeyError, TypeError, ValueError) as e:
            raise fail(f"metadata misses or mangles a required field ({e!r}); re-export") from e
        if not classes:
            raise fail("class_names is empty")
        if not channels or any(c not in _CHANNELS for c in channels):
            raise fail(f"input.channels {channels} must be names out of {_CHANNELS}")
        if len(size) != 2 or min(size) < 1:
            raise fail(f"input.size {size} must be (height, width)")
        if len(mean) != len(channels) or len(std) != len(channels) or min(std) <= 0:
            raise fail("input.mean / input.std need one value per channel, std > 0")
        if not outputs.get("mask_logits"):
            raise fail("outputs.mask_logits is required by the model contract")
        head = None
        if d.get("head") is not None:
            head = {
                k: decode_array(d["head"].get(k), f"head.{k}") for k in ("w1", "b1", "w2", "b2")
            }
        if not outputs.get("class_logits") and not (outputs.get("features") and head):
            raise fail("needs outputs.class_logits, or outputs.features plus head weights")
        if head is not None and head["w2"].shape[0] != len(classes):
            raise fail(
                f"head predicts {head['w2'].shape[0]} classes, class_names has {len(classes)}"
            )
        th = d.get("thresholds") or {}
        roi = d.get("roi") or {}
        try:
            box = tuple(int(v) for v in roi["box"]) if roi.get("box") else None
            md = cls(
                arch=arch,
                class_names=classes,
                channels=channels,
                input_size=(size[0], size[1]),
                mean=mean,
                std=std,
                sigma=float(inp.get("sigma", 1.0)),
                outputs={k: (str(v) if v else None) for k, v in outputs.items()},
                head=head,
                mask_threshold=float(th.get("mask", 0.5)),
                min_lesion_area_px=int(th.get("min_lesion_area_px", 16)),
                roi_policy=str(roi.get("policy", "full")),
                roi_box=box,  # type: ignore[arg-type]
                precision=str(d.get("precision", "fp32")),
                input_name=str(inp.get("name", "input")),
                provenance=dict(d.get("provenance") or {}),
                accuracy=dict(d.get("accuracy") or {}),
                tensorrt=dict(d["tensorrt"]) if d.get("tensorrt") else None,
                extra=dict(d.get("extra") or {}),
            )
        except (TypeError, ValueError) as e:
            raise fail(f"metadata has a field of the wrong type ({e}); re-export") from e
        if not 0.0 <= md.mask_threshold <= 1.0:
            raise fail(f"thresholds.mask {md.mask_threshold} must be in [0, 1]")
        if md.roi_policy not in ("full", "fixed"):
            raise fail(f"roi.policy {md.roi_policy!r} must be 'full' or 'fixed'")
        if md.roi_policy == "fixed" and (md.roi_box is None or len(md.roi_box) != 4):
            raise fail("roi.policy 'fixed' needs roi.box = [x, y, w, h]")
        return md


def read_onnx_metadata(session: Any, source: str = "model.onnx") -> Metadata:
    """Metadata of an ONNX model from an ``onnxruntime.InferenceSession`` (no onnx package)."""
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise ModelError(
            f"{source} carries no sonoedge metadata (metadata_props['{METADATA_KEY}']); export it "
            "with `sonoedge export`, or add metadata with export.onnx_export.embed_metadata"
        )
    return Metadata.from_json(meta[METADATA_KEY], source)


def write_plan(path: str | os.PathLike[str], metadata: Metadata, engine: bytes) -> Path:
    """Write a ``.plan`` container atomically (temp name + rename)."""
    path = Path(path)
    meta = metadata.to_json().encode()
    digest = hashlib.sha256(meta + engine).digest()
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(_HEADER.pack(PLAN_MAGIC, PLAN_FORMAT_VERSION, len(meta), len(engine), digest))
            f.write(meta)
            f.write(engine)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_plan(path: str | os.PathLike[str], verify: bool = True) -> tuple[Metadata, bytes]:
    """Read and check a ``.plan`` container: (metadata, raw engine bytes).

    Raises :class:`sdk.errors.ModelError` for a missing, truncated or corrupted file, a wrong
    magic, a newer format version, absurd lengths or a checksum mismatch.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        f = open(path, "rb")
    except OSError as e:
        raise ModelError(f"{path}: cannot open the artifact ({e.strerror})") from e
    with f:
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise ModelError(f"{path}: truncated ({size} bytes, header needs {_HEADER.size})")
        magic, version, m_len, e_len, digest = _HEADER.unpack(head)
        if magic != PLAN_MAGIC:
            raise ModelError(
                f"{path}: not a sonoedge .plan (magic {magic!r}); a raw TensorRT engine must be "
                "wrapped with `sonoedge export`, which adds the metadata it needs"
            )
        if version > PLAN_FORMAT_VERSION:
            raise ModelError(
                f"{path}: .plan format {version} is newer than this sonoedge "
                f"({PLAN_FORMAT_VERSION}); upgrade sonoedge"
            )
        if version < 1:
            raise ModelError(f"{path}: invalid .plan format version {version}")
        if m_len > MAX_METADATA_BYTES or _HEADER.size + m_len + e_len != size:
            raise ModelError(
                f"{path}: declared lengths (metadata {m_len}, engine {e_len}) do not match the "
                f"file size {size}: the file is truncated or corrupted; copy or rebuild it"
            )
        meta = f.read(m_len)
        engine = f.read(e_len)
    if verify and hashlib.sha256(meta + engine).digest() != digest:
        raise ModelError(f"{path}: checksum mismatch: the file is corrupted; copy or rebuild it")
    return Metadata.from_json(meta, str(path)), engine

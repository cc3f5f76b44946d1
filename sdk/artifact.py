"""The deployable artifact: one versioned metadata schema, carried inside the file.

Everything a device needs travels in the artifact itself: class names, input size and channels,
normalization, Gaussian sigma, ROI policy, output roles, head weights, thresholds, provenance,
accuracy measured at export and, for TensorRT, the build fingerprint.

* ``.onnx``: the JSON lives in ``metadata_props["sonoedge"]`` (read back through ONNX Runtime's
  ``custom_metadata_map``, so the runtime needs no ``onnx`` package). A second entry,
  ``metadata_props["sonoedge.digest"] = "sha256:<64 hex>"``, is the file's integrity digest:
  SHA-256 of the file's bytes with that one entry (its tag, length and payload: one top-level
  field 14 record of the ModelProto) cut out, so it covers every other byte: graph, weights,
  opsets and the sonoedge metadata itself. Finding the entry walks the ModelProto's top-level
  fields only (a dozen; the graph is one length-delimited field skipped in O(1)), so checking it
  costs one SHA-256 pass over the file and needs no ``onnx`` package. :func:`stamp_onnx_digest`
  writes it (the export stage does, in ``export.onnx_export.embed_metadata``), every backend's
  ``load`` checks it (:func:`verify_onnx_digest`): a changed byte is a ModelError, a file
  without the entry (a user's plain ONNX) loads with a one-line warning.
* ``.plan``: a small container around the serialized TensorRT engine::

      offset  size  field
      0       8     magic b"SONOPLAN"
      8       4     format version, uint32 little-endian (PLAN_FORMAT_VERSION)
      12      8     metadata length M, uint64 LE
      20      8     engine length E, uint64 LE
      28      32    SHA-256 of (metadata bytes + engine bytes)
      60      M     metadata, UTF-8 JSON
      60+M    E     serialized TensorRT engine

  Every length is checked against the file size before anything is read or allocated (the
  header and the two lengths must account for the file exactly); the checksum is checked before
  the engine is handed to TensorRT. The checksum covers the two parts as one run of bytes, not
  the boundary between them, so the boundary is checked on its own: the metadata is exactly one
  JSON object (it ends with its closing brace), which no shifted boundary can leave.
  ``sonoedge info`` prints the metadata; ``sonoedge info --extract-plan`` writes the raw engine
  for ``trtexec``.

Nothing on a load path unpickles, and no path found in metadata is ever opened.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import math
import numbers
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdk._constants import CHANNELS, MAX_MEAN, MAX_SIDE, MAX_SIGMA, MAX_STD, MIN_STD
from sdk.errors import ModelError

__all__ = [
    "DIGEST_KEY",
    "METADATA_KEY",
    "PLAN_FORMAT_VERSION",
    "PLAN_MAGIC",
    "SCHEMA_VERSION",
    "Metadata",
    "decode_array",
    "encode_array",
    "onnx_digest",
    "read_onnx_file_metadata",
    "read_onnx_metadata",
    "read_plan",
    "stamp_onnx_digest",
    "verify_onnx_digest",
    "write_plan",
]

SCHEMA = "sonoedge.artifact"
SCHEMA_VERSION = 1
METADATA_KEY = "sonoedge"
DIGEST_KEY = "sonoedge.digest"
_DIGEST_PREFIX = "sha256:"
_MODEL_METADATA_PROPS = 14  # onnx.ModelProto.metadata_props field number
log = logging.getLogger("sdk.artifact")
PLAN_MAGIC = b"SONOPLAN"
PLAN_FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQQ32s")  # magic, version, M, E, sha256
MAX_METADATA_BYTES = 64 * 1024 * 1024  # head weights included; far above any real model
_CHANNELS = CHANNELS
# The frame path's limits (sdk._constants, shared with sdk.kernels, pure Python so reading
# metadata needs no compiled kernels): metadata past them is refused at load, not per frame.
MAX_INPUT_SIDE = MAX_SIDE
_MAX_JSON_DEPTH = 64  # far above any real metadata; keeps deepcopy / printing off the stack limit
_MAX_INT_DIGITS = 100  # no field holds a longer integer


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _short(v: Any, n: int = 80) -> str:
    """repr() cut to n characters: a hostile value may be megabytes long."""
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits, larger than any field")
    return int(text)


def _json_depth(doc: Any) -> int:
    """Nesting depth of a parsed JSON document, without recursion."""
    depth, stack = 0, [(doc, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            depth = max(depth, d)
            if d > _MAX_JSON_DEPTH:
                break
            stack.extend((v, d + 1) for v in node if isinstance(v, (dict, list)))
    return depth


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
        if not isinstance(d, dict):
            raise TypeError(f"an object with shape / dtype / data expected, got {_kind(d)}")
        if not isinstance(d["shape"], list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in d["shape"]
        ):
            raise ValueError(f"shape {d['shape']!r} is not a list of sizes")
        shape = tuple(d["shape"])
        if d.get("dtype", "float32") != "float32":
            raise ValueError(f"dtype {d.get('dtype')!r}")
        raw = base64.b64decode(d["data"], validate=True)
        a = np.frombuffer(raw, dtype="<f4")
        if a.size != math.prod(shape):
            raise ValueError(f"{a.size} values for shape {shape}")
        return a.reshape(shape).astype(np.float32)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ModelError(
            f"artifact metadata: {name} is not a valid encoded array ({e}); re-export the model"
        ) from e


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
    #: Also drop lesions smaller than this fraction of the ROI's area (0: off): a floor that
    #: scales with the frame, which an absolute pixel count cannot (a 5 mm lesion covers ~2000
    #: px of a 600x800 frame and ~130 of a 128x128 one). The larger of the two floors applies.
    min_lesion_area_frac: float = 0.0
    #: A found region is reported as a lesion only if its own mask-guided class probability of
    #: "normal" (the pooled head's, calibrated) is at most this (1.0: off). The mask head alone
    #: outlines lesion-like normal tissue (fat lobules, shadows) on ~1 normal frame in 4; the
    #: mask-guided classifier, which sees the region's features, tells most of them apart.
    #: Fitted at export on tuning phantoms (``export.pipeline.fit_lesion_gate``).
    max_lesion_normal_prob: float = 1.0
    roi_policy: str = "full"  # "full": the whole frame; "fixed": roi_box; set per call otherwise
    roi_box: tuple[int, int, int, int] | None = None
    precision: str = "fp32"
    input_name: str = "input"
    provenance: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    tensorrt: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Out-of-scope model (``sdk.scope.Scope.to_dict``), fitted at export; None: every frame is
    #: in scope (``Result.scope_score`` None). Versioned by its own ``version``.
    scope: dict[str, Any] | None = None
    #: Probability calibration: ``{"version": 1, "temperature": T, ...}`` (``sdk.scope``);
    #: None: T = 1, the model's probabilities as they are.
    calibration: dict[str, Any] | None = None

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
                "min_lesion_area_frac": self.min_lesion_area_frac,
                "max_lesion_normal_prob": self.max_lesion_normal_prob,
            },
            "roi": {"policy": self.roi_policy, "box": list(self.roi_box) if self.roi_box else None},
            "precision": self.precision,
            "provenance": copy.deepcopy(self.provenance),
            "accuracy": copy.deepcopy(self.accuracy),
            "tensorrt": copy.deepcopy(self.tensorrt),
            "extra": copy.deepcopy(self.extra),
            "scope": copy.deepcopy(self.scope),
            "calibration": copy.deepcopy(self.calibration),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "artifact") -> Metadata:
        try:
            d = json.loads(text, parse_int=_parse_int)
        except RecursionError as e:
            raise ModelError(
                f"{source}: metadata is nested too deeply to be sonoedge metadata: the file is "
                "corrupted or not a sonoedge artifact; re-export the model"
            ) from e
        except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
            raise ModelError(
                f"{source}: metadata is not valid JSON ({str(e)[:200]}); re-export the model"
            ) from e
        if _json_depth(d) > _MAX_JSON_DEPTH:
            raise ModelError(
                f"{source}: metadata is nested deeper than {_MAX_JSON_DEPTH} levels: the file is "
                "corrupted or not a sonoedge artifact; re-export the model"
            )
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
            raise fail(f"metadata 'version' must be an integer, got {_short(version)}; re-export")
        if version > SCHEMA_VERSION:
            raise fail(
                f"metadata version {version} is newer than this sonoedge understands "
                f"({SCHEMA_VERSION}); upgrade sonoedge (pip install -U sonoedge)"
            )
        if version < 1:
            raise fail(f"metadata 'version' {version} is invalid (versions start at 1); re-export")

        def section(obj: dict[str, Any], key: str, name: str | None = None) -> dict[str, Any]:
            """An optional JSON object: {} when missing or null, refused when of another type."""
            v = obj.get(key)
            if v is None:
                return {}
            if not isinstance(v, dict):
                raise fail(
                    f"metadata '{name or key}' must be a JSON object, got {_kind(v)}; "
                    "re-export the model"
                )
            return v

        def integer(v: Any, name: str, lo: int, hi: int | None = None) -> int:
            if (
                isinstance(v, numbers.Real)
                and not isinstance(v, numbers.Integral)
                and math.isfinite(v)
                and float(v).is_integer()
            ):
                v = int(v)  # 128.0: an integer written as a float
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise fail(
                    f"{name} must be an integer, got {_kind(v)} {_short(v)}; re-export the model"
                )
            v = int(v)
            if v < lo or (hi is not None and v > hi):
                bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                raise fail(f"{name} must be {bounds}, got {v}; re-export the model")
            return v

        def real(v: Any, name: str) -> float:
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise fail(
                    f"{name} must be a number, got {_kind(v)} {_short(v)}; re-export the model"
                )
            f = float(v)
            if not math.isfinite(f):
                raise fail(f"{name} must be finite, got {f}; re-export the model")
            return f

        def array(v: Any, name: str) -> list[Any]:
            if not isinstance(v, (list, tuple)):
                raise fail(
                    f"{name} must be a list, got {_kind(v)} {_short(v)}; re-export the model"
                )
            return list(v)

        try:
            inp = d["input"]
            raw_classes = d["class_names"]
            raw_channels = inp["channels"]
            raw_size = inp["size"]
            raw_mean = inp["mean"]
            raw_std = inp["std"]
            raw_outputs = d["outputs"]
            arch = str(d["arch"])
        except (KeyError, TypeError, ValueError) as e:
            raise fail(f"metadata misses or mangles a required field ({e!r}); re-export") from e
        if not isinstance(inp, dict):
            raise fail(f"metadata 'input' must be a JSON object, got {_kind(inp)}; re-export")

        class_list = array(raw_classes, "class_names")
        if not class_list:
            raise fail("class_names is empty; re-export the model with its class names")
        if not all(isinstance(c, str) and c for c in class_list):
            raise fail(
                f"class_names must be non-empty strings, got {_short(class_list)}; re-export"
            )
        classes = tuple(class_list)
        if len(set(classes)) != len(classes):
            raise fail(
                f"class_names {_short(list(classes))} repeat a name: probabilities keyed by "
                "name would lose a class; re-export the model with distinct class names"
            )

        channels = tuple(array(raw_channels, "input.channels"))
        if not channels or any(c not in _CHANNELS for c in channels):
            raise fail(
                f"input.channels {_short(channels)} must be names out of {_CHANNELS}; re-export"
            )
        if len(set(channels)) != len(channels):
            raise fail(f"input.channels {_short(channels)} must not repeat a name; re-export")

        size_list = array(raw_size, "input.size")
        if len(size_list) != 2:
            raise fail(f"input.size {_short(size_list)} must be (height, width); re-export")
        size = tuple(
            integer(v, f"input.size[{i}] ({('height', 'width')[i]})", 1, MAX_INPUT_SIDE)
            for i, v in enumerate(size_list)
        )

        mean_list, std_list = array(raw_mean, "input.mean"), array(raw_std, "input.std")
        if len(mean_list) != len(channels) or len(std_list) != len(channels):
            raise fail("input.mean / input.std need one value per channel, std > 0; re-export")
        mean = tuple(real(v, f"input.mean[{i}]") for i, v in enumerate(mean_list))
        std = tuple(real(v, f"input.std[{i}]") for i, v in enumerate(std_list))
        if min(std) <= 0:
            raise fail(f"input.std must be > 0, got {std}; re-export the model")
        # The frame path's bounds (sdk.kernels._validate.MIN_STD / MAX_STD / MAX_MEAN): a std of
        # 1e-45 is finite and positive, but 1 / std overflows float32 and every input is inf.
        if not all(MIN_STD <= v <= MAX_STD for v in std) or not all(
            abs(v) <= MAX_MEAN for v in mean
        ):
            raise fail(
                f"input.std must be in [{MIN_STD:g}, {MAX_STD:g}] and input.mean within "
                f"+-{MAX_MEAN:g}, got std {std}, mean {mean}; re-export the model"
            )
        sigma = real(inp.get("sigma", 1.0), "input.sigma")
        if not 0.0 < sigma <= MAX_SIGMA:
            raise fail(
                f"input.sigma must be in (0, {MAX_SIGMA:g}] pixels (the Gaussian derivative's "
                f"scale), got {sigma:g}; re-export the model"
            )

        if not isinstance(raw_outputs, dict):
            raise fail(
                f"metadata 'outputs' must be a JSON object, got {_kind(raw_outputs)}; re-export"
            )
        outputs: dict[str, str | None] = {}
        for k, v in raw_outputs.items():
            if v is not None and not isinstance(v, str):
                raise fail(
                    f"outputs.{k} must be an output name or null, got {_kind(v)} {_short(v)}; "
                    "re-export the model"
                )
            outputs[k] = v or None
        if not outputs.get("mask_logits"):
            raise fail("outputs.mask_logits is required by the model contract; re-export the model")

        head = None
        if d.get("head") is not None:
            head_d = section(d, "head")
            head = {k: decode_array(head_d.get(k), f"head.{k}") for k in ("w1", "b1", "w2", "b2")}
            w1, b1, w2, b2 = (head[k] for k in ("w1", "b1", "w2", "b2"))
            if (
                w1.ndim != 2
                or w1.size == 0
                or b1.shape != (w1.shape[0],)
                or w2.ndim != 2
                or w2.shape[1] != w1.shape[0]
                or b2.shape != (w2.shape[0],)
            ):
                raise fail(
                    "head weights must be w1 (hidden, features), b1 (hidden,), w2 (classes, "
                    f"hidden), b2 (classes,), got {[tuple(a.shape) for a in head.values()]}; "
                    "re-export the model"
                )
            for k, a in head.items():
                if not np.isfinite(a).all():
                    raise fail(f"head.{k} contains NaN or inf; re-export the model")
        if not outputs.get("class_logits") and not (outputs.get("features") and head):
            raise fail(
                "needs outputs.class_logits, or outputs.features plus head weights; re-export"
            )
        if head is not None and head["w2"].shape[0] != len(classes):
            raise fail(
                f"head predicts {head['w2'].shape[0]} classes, class_names has {len(classes)}; "
                "re-export the model"
            )

        th = section(d, "thresholds")
        mask_threshold = real(th.get("mask", 0.5), "thresholds.mask")
        if not 0.0 <= mask_threshold <= 1.0:
            raise fail(f"thresholds.mask {mask_threshold} must be in [0, 1]; re-export the model")
        min_area = integer(th.get("min_lesion_area_px", 16), "thresholds.min_lesion_area_px", 0)
        min_frac = real(th.get("min_lesion_area_frac", 0.0), "thresholds.min_lesion_area_frac")
        if not 0.0 <= min_frac < 1.0:
            raise fail(
                f"thresholds.min_lesion_area_frac {min_frac} must be in [0, 1); re-export the model"
            )

        max_normal = real(
            th.get("max_lesion_normal_prob", 1.0), "thresholds.max_lesion_normal_prob"
        )
        if not 0.0 < max_normal <= 1.0:
            raise fail(
                f"thresholds.max_lesion_normal_prob {max_normal} must be in (0, 1] (1: off); "
                "re-export the model"
            )

        roi = section(d, "roi")
        roi_policy = roi.get("policy", "full")
        if roi_policy not in ("full", "fixed"):
            raise fail(
                f"roi.policy {_short(roi_policy)} must be 'full' or 'fixed'; re-export the model"
            )
        box = None
        if roi.get("box"):
            box_list = array(roi["box"], "roi.box")
            if len(box_list) != 4:
                raise fail(f"roi.box {_short(box_list)} must be [x, y, w, h]; re-export")
            box = tuple(
                integer(v, f"roi.box[{i}]", 1 if i >= 2 else 0) for i, v in enumerate(box_list)
            )
        if roi_policy == "fixed" and box is None:
            raise fail("roi.policy 'fixed' needs roi.box = [x, y, w, h]; re-export the model")

        tensorrt = section(d, "tensorrt") or None
        # Optional, versioned blocks (sdk.scope): validated here so a bad one fails at load.
        from sdk.scope import Scope, check_temperature

        scope = section(d, "scope") or None
        if scope is not None:
            Scope.from_dict(scope, source).check_outputs(
                bool(outputs.get("features")), bool(outputs.get("class_logits")), source
            )
        calibration = section(d, "calibration") or None
        if calibration is not None:
            check_temperature(calibration.get("temperature", 1.0), source)
        return cls(
            arch=arch,
            class_names=classes,
            channels=channels,
            input_size=(size[0], size[1]),
            mean=mean,
            std=std,
            sigma=sigma,
            outputs=outputs,
            head=head,
            mask_threshold=mask_threshold,
            min_lesion_area_px=min_area,
            min_lesion_area_frac=min_frac,
            max_lesion_normal_prob=max_normal,
            roi_policy=roi_policy,
            roi_box=box,  # type: ignore[arg-type]
            precision=str(d.get("precision", "fp32")),
            input_name=str(inp.get("name", "input")),
            provenance=dict(section(d, "provenance")),
            accuracy=dict(section(d, "accuracy")),
            tensorrt=dict(tensorrt) if tensorrt else None,
            extra=dict(section(d, "extra")),
            scope=copy.deepcopy(scope),
            calibration=copy.deepcopy(calibration),
        )


def read_onnx_metadata(session: Any, source: str = "model.onnx") -> Metadata:
    """Metadata of an ONNX model from an ``onnxruntime.InferenceSession`` (no onnx package)."""
    try:
        meta = session.get_modelmeta().custom_metadata_map
    except UnicodeDecodeError as e:  # ONNX Runtime decodes metadata_props as UTF-8
        raise ModelError(
            f"{source}: its metadata (metadata_props) is not valid UTF-8 ({e.reason} at byte "
            f"{e.start}): the file is corrupted; copy it again or re-export the model"
        ) from e
    if METADATA_KEY not in meta:
        raise ModelError(
            f"{source} carries no sonoedge metadata (metadata_props['{METADATA_KEY}']); export it "
            "with `sonoedge export`, or add metadata with export.onnx_export.embed_metadata"
        )
    return Metadata.from_json(meta[METADATA_KEY], source)


def read_onnx_file_metadata(path: str | os.PathLike[str]) -> Metadata:
    """Metadata of an ``.onnx`` file, for callers without a session of their own (the export
    stage, the doctor, runtimes other than ONNX Runtime): a session with every graph
    optimization off, so reading costs a parse, not a compile."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for bad files
        raise ModelError(
            f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}); the file is corrupted or "
            "not an ONNX model: re-export it"
        ) from exc
    return read_onnx_metadata(sess, str(path))


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
    md = Metadata.from_json(meta, str(path))
    # The checksum cannot see the metadata / engine boundary (lengths changed together keep the
    # sum and the digest). write_plan's metadata is one JSON object and nothing else, so it ends
    # with "}": a boundary moved back cuts the object open (not JSON), one moved forward appends
    # engine bytes after it (not JSON either, unless they are whitespace: caught here).
    if not meta.endswith(b"}"):
        raise ModelError(
            f"{path}: declared lengths (metadata {m_len}, engine {e_len}) do not end the metadata "
            "at its closing brace: the header is corrupted; copy or rebuild the file"
        )
    return md, engine


# --------------------------------------------------------------------------- .onnx integrity


def _varint(buf: bytes | memoryview, i: int, end: int) -> tuple[int, int]:
    """A protobuf varint at ``buf[i]``: (value, index after it); ValueError past ``end``."""
    v, shift = 0, 0
    while True:
        if i >= end or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, i
        shift += 7


def _entry_key_value(buf: bytes | memoryview, i: int, end: int) -> tuple[bytes, bytes]:
    """key and value of a StringStringEntryProto held in ``buf[i:end]``."""
    key, value = b"", b""
    while i < end:
        tag, i = _varint(buf, i, end)
        if tag & 7 != 2:  # both fields are strings; anything else: skip it
            if tag & 7 == 0:
                _, i = _varint(buf, i, end)
                continue
            raise ValueError("unexpected wire type in a metadata_props entry")
        n, i = _varint(buf, i, end)
        if i + n > end:
            raise ValueError("truncated metadata_props entry")
        if tag >> 3 == 1:
            key = bytes(buf[i : i + n])
        elif tag >> 3 == 2:
            value = bytes(buf[i : i + n])
        i += n
    return key, value


def _digest_spans(buf: bytes | memoryview) -> list[tuple[int, int, bytes]]:
    """(start, end, value) of every top-level ``metadata_props`` entry keyed ``DIGEST_KEY``.

    Walks the ModelProto's top-level fields only; raises ValueError on bytes that are not a
    protobuf message."""
    spans, i, n = [], 0, len(buf)
    while i < n:
        start = i
        tag, i = _varint(buf, i, n)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire == 0:
            _, i = _varint(buf, i, n)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = _varint(buf, i, n)
            if field == _MODEL_METADATA_PROPS and i + length <= n:
                key, value = _entry_key_value(buf, i, i + length)
                if key == DIGEST_KEY.encode():
                    spans.append((start, i + length, value))
            i += length
        else:  # groups (3, 4) do not occur in a ModelProto; 6, 7 are not wire types
            raise ValueError(f"wire type {wire}")
        if i > n:
            raise ValueError("a field runs past the end of the file")
    return spans


def _sha256_without(buf: bytes | memoryview, start: int, end: int) -> str:
    h = hashlib.sha256()
    mv = memoryview(buf)
    h.update(mv[:start])
    h.update(mv[end:])
    return h.hexdigest()


def onnx_digest(data: bytes) -> tuple[str, str | None]:
    """(digest computed, digest recorded or None) of an ``.onnx`` file's bytes.

    The digest is SHA-256 of the bytes without the ``metadata_props["sonoedge.digest"]`` entry
    (see the module docstring); without such an entry it is SHA-256 of all the bytes.

    Raises:
        ModelError: not a protobuf message, or more than one digest entry.
    """
    try:
        spans = _digest_spans(data)
    except ValueError as e:
        raise ModelError(
            f"cannot load it: not a valid ONNX file ({e}); the file is truncated or corrupted: "
            "copy it again or re-export the model"
        ) from e
    if not spans:
        return hashlib.sha256(data).hexdigest(), None
    if len(spans) > 1:
        raise ModelError(
            f"{len(spans)} '{DIGEST_KEY}' entries in metadata_props (one expected): the file was "
            "edited; re-export the model"
        )
    start, end, value = spans[0]
    return _sha256_without(data, start, end), value.decode("utf-8", "replace")


def _regenerate_hint(path: Path) -> str:
    if path.parent.name == "models" and path.name.startswith("default-"):
        return (
            f"restore the shipped file (git checkout -- sdk/models/{path.name} in a source "
            "tree, or reinstall sonoedge); benchmarks/ship_default_model.py regenerates it"
        )
    return (
        "copy the file again from its source, or re-export it (`sonoedge export`; "
        "export.onnx_export.embed_metadata stamps a fresh digest)"
    )


def verify_onnx_digest(path: str | os.PathLike[str], data: bytes | None = None) -> str | None:
    """Check an ``.onnx`` artifact's integrity digest: the digest when it matches, None when the
    file carries none (after a one-line warning on the ``sdk.artifact`` logger).

    Raises:
        ModelError: a digest that does not match the bytes (naming the file and how to
            regenerate it), a malformed digest entry, or bytes that are not a protobuf message.
    """
    path = Path(path)
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelError(f"{path}: cannot read the artifact ({e.strerror or e})") from e
    try:
        computed, recorded = onnx_digest(data)
    except ModelError as e:
        raise ModelError(f"{path}: {e}") from e
    if recorded is None:
        log.warning(
            "%s carries no integrity digest (metadata_props['%s']): a corrupted copy would go "
            "unnoticed; stamp it with sdk.artifact.stamp_onnx_digest or re-export it",
            path,
            DIGEST_KEY,
        )
        return None
    if recorded != _DIGEST_PREFIX + computed:
        raise ModelError(
            f"{path}: integrity check failed: its bytes hash to sha256:{computed[:16]}..., the "
            f"digest it carries is {_short(recorded, 30)}: the file was changed after export "
            f"(a corrupted copy, a flipped byte, an edit); {_regenerate_hint(path)}"
        )
    return recorded


def stamp_onnx_digest(path: str | os.PathLike[str]) -> str:
    """Write (or rewrite) the integrity digest of an ``.onnx`` file in place, atomically; returns
    it (``"sha256:<hex>"``). Any earlier digest entry is dropped; the new one is appended as the
    last top-level field (protobuf merges repeated fields in any order). Needs no ``onnx``."""
    path = Path(path)
    data = path.read_bytes()
    try:
        spans = _digest_spans(data)
    except ValueError as e:
        raise ModelError(f"{path}: not a valid ONNX file ({e}); cannot stamp it") from e
    for start, end, _ in reversed(spans):
        data = data[:start] + data[end:]
    digest = _DIGEST_PREFIX + hashlib.sha256(data).hexdigest()
    key, value = DIGEST_KEY.encode(), digest.encode()
    entry = b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(value)]) + value
    record = bytes([_MODEL_METADATA_PROPS << 3 | 2]) + _encode_varint(len(entry)) + entry
    tmp = path.with_name(path.name + ".stamp.tmp")
    try:
        tmp.write_bytes(data + record)
        if verify_onnx_digest(tmp) != digest:  # the definition, checked on what was written
            raise ModelError(f"{path}: the digest written does not verify")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return digest


def _encode_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

"""Bring your own model (issue #16): a user's ONNX graph or ``nn.Module`` → a sonoedge artifact.

    export.import_onnx("theirs.onnx", "model.onnx", classes=("normal", "benign", "malignant"),
                       mask_output="seg", class_output="cls", layout="nhwc", color="rgb",
                       mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    export.import_torch(net, "model.onnx", example_input=torch.zeros(1, 1, 256, 256), ...)
    export.quantize("model.onnx", "model.int8.onnx", data="/data/BUSI", target="cpu")

Design: adapter nodes around the user's graph, not a runtime that guesses
--------------------------------------------------------------------------
The SDK runs one model contract (docs/ARCHITECTURE.md "The model contract"): input ``input``
``[B, C, h, w]`` float32 as the preprocess kernel writes it, outputs ``mask_logits``
``[B, 1, h', w']`` and ``class_logits`` ``[B, K]``. A user's model differs in names, layout,
colour, normalization and output activations. Two ways to bridge that: teach the runtime every
variant (more metadata fields, branches in the hot path of every backend -- ONNX Runtime,
TensorRT, OpenVINO, torch -- and in the CUDA preprocess), or rewrite the user's graph once, at
import, so it obeys the contract the runtime already runs. We do the latter: :func:`import_onnx`
wraps the graph in a few ONNX nodes,

* in front: the SDK feeds channel ``image`` = resized gray / 255 (metadata mean 0, std 1, so the
  kernel's normalization is the identity) as ``[B, 1, h, w]``; one ``Mul`` + ``Add`` per channel
  turn it into the user's documented ``(pixel / scale - mean[c]) / std[c]`` (pixel = 255 ·
  value), broadcasting the one gray channel over the model's 1 or 3 channels, a ``Transpose``
  for NHWC and a ``Cast`` for float16 / float64 inputs;
* behind: sigmoid probabilities → logits (``log p - log(1 - p)``, p clipped to [1e-7, 1 - 1e-7]),
  a 2-channel mask (softmax probabilities: ``log p1 - log p0``; two-class logits: ``z1 - z0``,
  the same decision as the softmax) → one logit channel, NHWC / ``[B, h, w]`` masks → NCHW, class
  probabilities → log-probabilities (``softmax(log p) = p``), other float types → float32.

So every backend, the CUDA preprocess, quantization, the TensorRT build, ``Result``, lesions and
overlays work on imported models unchanged, and the SDK-side cost is one fused elementwise op on
the input. The mapping is recorded in ``metadata.provenance["import"]``; the runtime never
guesses. Normalization lives in the graph, not in the metadata's mean / std, because the SDK has
one gray channel and an RGB model may want three different means: one code path for all.

Frames are analyzed in gray: the SDK turns a colour frame into BT.601 luma before anything else
(B-mode is gray), so an RGB / BGR model sees the gray value in all three channels ("a gray frame
fills all channels of an RGB model"); ``color`` fixes the channel count and the order in which
``mean`` / ``std`` are given (one value per model channel, in the model's channel order).

Heads the contract requires but a model lacks:

* **segmentation only** (``class_output=None``): ``classes`` must be two names, one of them
  ``"normal"`` (e.g. ``("normal", "lesion")``). The adapter emits ``class_logits`` = 0 for
  ``normal`` and the largest mask logit for the other class, i.e. P(lesion) = the largest
  lesion probability on the mask grid. The SDK's label rule (a frame is ``normal`` iff it has no
  lesion) then labels frames by the mask, every lesion is the lesion class, and ``raw_probs``
  holds that mask-derived probability. A seg-only model with three classes is refused: it could
  not tell benign from malignant, and a uniform guess would be a made-up diagnosis.
* **classification only** (``mask_output=None``): the adapter emits a 1×1 ``mask_logits`` =
  logit(1 - P(normal)) (``logsumexp`` of the other class logits minus the normal one), so the
  whole frame is one lesion exactly when the classifier calls it abnormal (above
  ``threshold``), labelled by the classifier; without a ``"normal"`` class every frame is one
  whole-frame lesion. ``Result.mask`` then marks the frame, not a region: such a model has no
  localization, and the lesion box says so (the whole frame).

Checks at import, all :class:`sdk.errors.ModelError` naming the tensor and the fix: a missing
input / output name (the names present are listed), ranks and channel counts that do not fit
the layout / colour / activation, a class count different from ``classes``, probabilities
declared where the output is not (values outside [0, 1], softmax not summing to 1), a fixed
batch above 1, an input size that is neither fixed nor given, opsets below 13, external data
that is missing or too large to inline. The source is *run* once with ONNX Runtime on a probe
(batch 2 when dynamic) and the finished artifact is checked against it: the probabilities the
SDK will compute from the adapted outputs must equal the ones the user's documented
post-processing gives (max difference recorded in ``metadata.accuracy["parity"]``).

External data (weights in a side file): read from beside the source and inlined; the artifact is
one file (the SDK's integrity digest covers one file). A graph above protobuf's 2 GB limit
cannot be one file and is refused. Every artifact is written under a temporary name in the
destination folder and renamed when complete: a failed import leaves nothing behind.

``quantize`` (the issue's ``export.quantize(...)``) is defined here; ``export.quantize`` is also
the name of the existing recipe module (``from export.quantize import quantize_with_budget``).
The module object is made callable (``export/quantize.py``, last lines) and calls
:func:`quantize`: both spellings keep working in every import order (a function in
``export/__init__.py`` would be replaced by the submodule the moment anything imports it).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import InputError, ModelError

__all__ = ["MIN_OPSET", "import_onnx", "import_torch", "quantize"]

log = logging.getLogger("export.importer")

MIN_OPSET = 13  # Unsqueeze / Squeeze / Slice with tensor inputs, Softmax over one axis
_PREFIX = "src/"  # every name of the user's graph gets it: no clash with the adapter's names
_A = "sonoedge/"  # the adapter's own names
_LAYOUTS = ("nchw", "nhwc")
_COLORS = {"gray": 1, "rgb": 3, "bgr": 3}
_MASK_ACTS = ("logits", "sigmoid", "softmax")
_CLASS_ACTS = ("logits", "softmax")
_P_EPS = 1e-7  # sigmoid probabilities clipped to [eps, 1 - eps] before the logit (float32-safe)
_P_TINY = 1e-30  # softmax probabilities floored here before the log (no -inf logits)
_NO_NORMAL_LOGIT = 16.0  # classification-only, no "normal" class: sigmoid(16) = 1 - 1e-7
_MAX_INLINE_BYTES = 2**31 - 2**24  # protobuf's 2 GB message limit, with room for the adapter
_PARITY_ATOL = 1e-4
NORMAL = "normal"


# --------------------------------------------------------------------------- argument checks


def _classes(classes: Any) -> tuple[str, ...]:
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",")]
    try:
        out = tuple(classes)
    except TypeError:
        raise InputError(
            f"classes must be a list of class names in the model's output order, e.g. "
            f"('normal', 'benign', 'malignant'), got {classes!r}"
        ) from None
    if len(out) < 2 or not all(isinstance(c, str) and c.strip() == c and c for c in out):
        raise InputError(
            f"classes must be at least two non-empty names (no surrounding spaces) in the "
            f"model's output order, got {list(out)!r}"
        )
    if len(set(out)) != len(out):
        raise InputError(f"classes {list(out)} repeat a name; each class needs its own name")
    return out


def _per_channel(value: Any, name: str, n: int, positive: bool) -> tuple[float, ...]:
    vals = [value] if isinstance(value, int | float | np.number) else value
    try:
        vals = [float(v) for v in vals]
    except (TypeError, ValueError):
        raise InputError(
            f"{name} must be a number or one number per channel, got {value!r}"
        ) from None
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n:
        raise InputError(
            f"{name} has {len(vals)} values but the model has {n} input channel(s); give one "
            f"value, or {n} in the model's channel order"
        )
    if not all(math.isfinite(v) for v in vals) or (positive and min(vals) <= 0):
        raise InputError(f"{name} must be finite{' and > 0' if positive else ''}, got {vals}")
    return tuple(vals)


def _choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _check_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int | np.integer) and not isinstance(size, bool):
        size = (int(size), int(size))
    try:
        h, w = (int(v) for v in size)
        ok = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in size)
    except (TypeError, ValueError):
        ok = False
    if not ok or not (1 <= h <= 16384 and 1 <= w <= 16384):
        raise InputError(f"size must be (height, width) in pixels, 1..16384, got {size!r}")
    return h, w


def _dst(dst: Any, src: Path | None = None) -> Path:
    out = Path(dst)
    if out.suffix.lower() != ".onnx":
        raise InputError(f"the artifact must be an .onnx file, got {out}")
    if src is not None and out.resolve() == src.resolve():
        raise InputError(f"dst {out} is the source itself; write the artifact to another file")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _part(out: Path) -> Path:
    return out.with_name(f".{out.stem}.part{out.suffix}")


# --------------------------------------------------------------------------- graph helpers


def _opset(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _dims(vi: Any) -> list[int | str | None]:
    """Static dims as int, named dynamic dims as str, unknown as None; [] for unknown rank."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    out: list[int | str | None] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _used_names(graph: Any) -> set[str]:
    """Every tensor name a graph's nodes read, subgraphs included (outer-scope references)."""
    names: set[str] = set()
    for n in graph.node:
        names.update(i for i in n.input if i)
        for a in n.attribute:
            if a.HasField("g"):
                names |= _used_names(a.g)
            for g in a.graphs:
                names |= _used_names(g)
    return names


def _prune(graph: Any) -> None:
    """Drop the nodes and initializers no graph output depends on (the user's other outputs:
    deep supervision, auxiliary heads), so the artifact computes only what the SDK reads."""
    needed = {o.name for o in graph.output}
    keep = []
    for n in reversed(list(graph.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
            for a in n.attribute:
                if a.HasField("g"):
                    needed |= _used_names(a.g)
                for g in a.graphs:
                    needed |= _used_names(g)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    vis = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(vis)


class _Builder:
    """Adapter nodes and constants at the graph's opset (axes of Reduce* are an input from 18)."""

    def __init__(self, opset: int) -> None:
        from onnx import helper

        self.h = helper
        self.opset = opset
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0

    def _name(self, what: str) -> str:
        self.n += 1
        return f"{_A}{what}_{self.n}"

    def const(self, value: Any, dtype: Any = np.float32, what: str = "c") -> str:
        from onnx import numpy_helper

        name = self._name(what)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op: str, inputs: Sequence[str], out: str | None = None, **attrs: Any) -> str:
        out = out or self._name(op.lower())
        self.nodes.append(self.h.make_node(op, list(inputs), [out], name=self._name(op), **attrs))
        return out

    def reduce(self, op: str, x: str, axes: Sequence[int], keepdims: int, out: str | None = None):
        if self.opset >= 18:
            ax = self.const(list(axes), np.int64, "axes")
            return self.op(op, [x, ax], out, keepdims=keepdims)
        return self.op(op, [x], out, axes=list(axes), keepdims=keepdims)

    def slice(self, x: str, axis: int, start: int, end: int) -> str:
        return self.op(
            "Slice",
            [
                x,
                self.const([start], np.int64, "starts"),
                self.const([end], np.int64, "ends"),
                self.const([axis], np.int64, "axes"),
            ],
        )


_ONNX_FLOAT, _ONNX_FLOAT16, _ONNX_DOUBLE = 1, 10, 11
_NP_OF = {_ONNX_FLOAT: np.float32, _ONNX_FLOAT16: np.float16, _ONNX_DOUBLE: np.float64}


# --------------------------------------------------------------------------- import_onnx


def _load_source(src: Path) -> tuple[Any, bool]:
    """The user's ModelProto with its weights inline; (model, had external data)."""
    import onnx
    from onnx import external_data_helper as ext

    if not src.is_file():
        raise ModelError(f"{src}: no such ONNX file; check the path")
    try:
        m = onnx.load(str(src), load_external_data=False)
    except Exception as exc:  # DecodeError, OSError, ValueError: all "not an ONNX"
        raise ModelError(
            f"{src}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]}); "
            "export it again (torch.onnx.export, tf2onnx, ...)"
        ) from exc
    tensors = [t for t in ext._get_all_tensors(m) if ext.uses_external_data(t)]
    if not tensors:
        return m, False
    total = 0
    for t in tensors:
        info = ext.ExternalDataInfo(t)
        loc = Path(info.location)
        if loc.is_absolute() or ".." in loc.parts:
            raise ModelError(
                f"{src}: tensor {t.name!r} points at external data {info.location!r} outside the "
                "model's folder; keep the weights file beside the .onnx (a relative name)"
            )
        f = src.parent / loc
        if not f.is_file():
            raise ModelError(
                f"{src}: tensor {t.name!r} keeps its weights in the external file "
                f"{info.location!r}, which is not in {src.parent}; copy it beside the .onnx"
            )
        total += int(info.length) if info.length else f.stat().st_size
    if total > _MAX_INLINE_BYTES:
        raise ModelError(
            f"{src}: {total / 1e9:.2f} GB of external weights cannot be inlined (an .onnx file "
            "holds at most 2 GB, and a sonoedge artifact is one file, covered by one digest); "
            "export a smaller model or FP16 weights"
        )
    try:
        ext.load_external_data_for_model(m, str(src.parent))
    except Exception as exc:
        raise ModelError(f"{src}: cannot read its external weights ({exc}); re-export it") from exc
    return m, True


def _shape_text(dims: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def import_onnx(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    classes: Sequence[str] | str,
    mask_output: str | None,
    mask_activation: str = "logits",
    class_output: str | None = None,
    class_activation: str = "logits",
    input: str | None = None,  # the keyword (shadows the builtin here only)
    layout: str = "nchw",
    color: str = "gray",
    size: tuple[int, int] | None = None,
    scale: float = 1.0,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    threshold: float = 0.5,
    min_lesion_area_px: int = 16,
    _provenance: dict[str, Any] | None = None,
) -> Path:
    """A user's ONNX model → a sonoedge artifact at ``dst`` (see the module docstring).

    Args:
        src: the user's ``.onnx`` (external-data weights beside it are inlined).
        dst: the artifact to write (``.onnx``).
        classes: class names in the order of the model's class output (a list or "a,b,c").
        mask_output: the graph output holding the lesion mask, ``[B, 1|2, h', w']`` (NCHW),
            ``[B, h', w', 1|2]`` (NHWC) or ``[B, h', w']``; None for a classification-only model.
        mask_activation: ``"logits"`` (1 channel: a logit; 2 channels: background / lesion
            logits of a softmax), ``"sigmoid"`` (1-channel probabilities) or ``"softmax"``
            (2-channel probabilities). Channel 1 of a 2-channel mask is the lesion.
        class_output: the graph output with the class scores ``[B, K]``; None for a
            segmentation-only model (then ``classes`` is two names, one ``"normal"``).
        class_activation: ``"logits"`` or ``"softmax"`` (probabilities summing to 1).
        input: the graph input to feed (default: its only input).
        layout: ``"nchw"`` or ``"nhwc"``, of the input and of a rank-4 mask.
        color: ``"gray"`` (1 channel), ``"rgb"`` or ``"bgr"`` (3 channels).
        size: the input ``(height, width)``; needed when the graph's is dynamic.
        scale, mean, std: the model sees ``(pixel / scale - mean[c]) / std[c]`` for pixel values
            0..255; ``mean`` / ``std`` one number or one per channel in the model's order.
        threshold: the artifact's mask threshold on the lesion probability.
        min_lesion_area_px: lesions smaller than this (frame pixels) are dropped by the SDK.

    Returns:
        ``dst``.

    Raises:
        InputError: an argument out of its domain.
        ModelError: the model does not match the description (module docstring).
    """
    import onnx
    import onnxruntime as ort

    from export.onnx_export import embed_metadata
    from sdk.artifact import Metadata

    src = Path(src)
    names = _classes(classes)
    layout = _choice(layout, "layout", _LAYOUTS)
    color = _choice(color, "color", tuple(_COLORS))
    mask_activation = _choice(mask_activation, "mask_activation", _MASK_ACTS)
    class_activation = _choice(class_activation, "class_activation", _CLASS_ACTS)
    size = _check_size(size)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise InputError(f"scale must be a number > 0 (pixel / scale), got {scale!r}")
    if not math.isfinite(float(scale)):
        raise InputError(f"scale must be finite, got {scale!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise InputError(f"threshold must be a number in (0, 1), got {threshold!r}")
    if not 0.0 < float(threshold) < 1.0:
        raise InputError(f"threshold must be in (0, 1), got {threshold!r}")
    if isinstance(min_lesion_area_px, bool) or not isinstance(min_lesion_area_px, int):
        raise InputError(f"min_lesion_area_px must be an integer >= 0, got {min_lesion_area_px!r}")
    if min_lesion_area_px < 0:
        raise InputError(f"min_lesion_area_px must be >= 0, got {min_lesion_area_px}")
    if mask_output is None and class_output is None:
        raise InputError(
            "give mask_output (the lesion mask's output name) and/or class_output (the class "
            "scores'): the model must produce at least one of them"
        )
    if mask_output is not None and mask_output == class_output:
        raise InputError(f"mask_output and class_output are both {mask_output!r}; name two outputs")
    if class_output is None:
        others = [c for c in names if c != NORMAL]
        if len(names) != 2 or len(others) != 1:
            raise InputError(
                f"a segmentation-only model (no class_output) cannot tell {names} apart: pass "
                "classes=('normal', 'lesion') (two names, one of them 'normal'; frames with a "
                "lesion get the other name), or give class_output"
            )
    out = _dst(dst, src)

    model, external = _load_source(src)
    g = model.graph
    opset = _opset(model)
    if opset < MIN_OPSET:
        raise ModelError(
            f"{src.name}: opset {opset or 'none'} of the default ONNX domain; import needs "
            f">= {MIN_OPSET}. Re-export with opset_version={MIN_OPSET} or newer, or convert: "
            f"onnx.version_converter.convert_version(onnx.load(path), {MIN_OPSET})"
        )

    # ---- the input ------------------------------------------------------------------------
    init_names = {t.name for t in g.initializer}
    real_inputs = [i for i in g.input if i.name not in init_names]
    in_names = [i.name for i in real_inputs]
    if input is None:
        if len(real_inputs) != 1:
            raise ModelError(
                f"{src.name} has {len(real_inputs)} inputs {in_names}; the SDK feeds one image "
                "tensor: name it with input=NAME (--input NAME). A model that needs the others "
                "too cannot run on a frame alone"
            )
        vin = real_inputs[0]
    else:
        match = [i for i in real_inputs if i.name == input]
        if not match:
            raise ModelError(
                f"{src.name} has no input {input!r}; its inputs are {in_names}: pass one of them"
            )
        vin = match[0]
        if len(real_inputs) > 1:
            raise ModelError(
                f"{src.name} has inputs {in_names}; the SDK feeds only {input!r}, the others "
                "would be missing at run time: export a graph with the one image input"
            )
    in_type = vin.type.tensor_type.elem_type
    if in_type not in _NP_OF:
        raise ModelError(
            f"{src.name}: input {vin.name!r} is of ONNX type "
            f"{onnx.TensorProto.DataType.Name(in_type)}; import takes float32 / float16 / "
            "float64 image inputs (a uint8 input already holds the preprocessing: export the "
            "graph after it)"
        )
    dims = _dims(vin)
    n_ch = _COLORS[color]
    if len(dims) != 4:
        raise ModelError(
            f"{src.name}: input {vin.name!r} has rank {len(dims) or 'unknown'} "
            f"{_shape_text(dims)}; import needs a rank-4 image batch, [B, C, H, W] (layout "
            "'nchw') or [B, H, W, C] (layout 'nhwc'): re-export with a batch and channel axis"
        )
    b_dim, c_dim, h_dim, w_dim = (
        (dims[0], dims[1], dims[2], dims[3])
        if layout == "nchw"
        else (dims[0], dims[3], dims[1], dims[2])
    )
    if isinstance(c_dim, int) and c_dim != n_ch:
        hint = "color='rgb' or 'bgr'" if c_dim == 3 else "color='gray'" if c_dim == 1 else ""
        last = dims[3] if layout == "nchw" else dims[1]
        if c_dim not in (1, 3):
            hint = (
                f"layout={'nhwc' if layout == 'nchw' else 'nchw'!r} (that axis holds {last})"
                if last in (1, 3)
                else "a model with 1 (gray) or 3 (RGB / BGR) input channels"
            )
        raise ModelError(
            f"{src.name}: input {vin.name!r} {_shape_text(dims)} has {c_dim} channel(s) on its "
            f"{layout} channel axis, color={color!r} means {n_ch}: pass {hint}"
        )
    if isinstance(b_dim, int) and b_dim > 1:
        raise ModelError(
            f"{src.name}: input {vin.name!r} {_shape_text(dims)} has a fixed batch of {b_dim}; "
            "the SDK runs 1 frame, or up to 8 with a dynamic batch: re-export with batch 1 or a "
            "dynamic batch axis (dynamic_axes={'input': {0: 'batch'}})"
        )
    dynamic_batch = not isinstance(b_dim, int)
    fixed = (h_dim, w_dim) if isinstance(h_dim, int) and isinstance(w_dim, int) else None
    if size is None:
        if fixed is None:
            raise ModelError(
                f"{src.name}: input {vin.name!r} {_shape_text(dims)} has a dynamic height / "
                "width; pass the size the model was trained at: size=(h, w) (--size HxW)"
            )
        size = fixed
    for got, want, axis in ((h_dim, size[0], "height"), (w_dim, size[1], "width")):
        if isinstance(got, int) and got != want:
            raise ModelError(
                f"{src.name}: input {vin.name!r} {_shape_text(dims)} has a fixed {axis} of {got}, "
                f"size asks {want}: pass size=({fixed[0] if fixed else '?'}, "
                f"{fixed[1] if fixed else '?'}) or omit it"
            )
    means = _per_channel(mean, "mean", n_ch, positive=False)
    stds = _per_channel(std, "std", n_ch, positive=True)

    # ---- the outputs ----------------------------------------------------------------------
    outs = {o.name: o for o in g.output}
    for role, name in (("mask_output", mask_output), ("class_output", class_output)):
        if name is not None and name not in outs:
            raise ModelError(
                f"{src.name} has no output {name!r} ({role}); its outputs are {sorted(outs)}: "
                f"pass one of them as {role}"
            )
    for name in (mask_output, class_output):
        if name is not None:
            t = outs[name].type.tensor_type.elem_type
            if t not in _NP_OF:
                raise ModelError(
                    f"{src.name}: output {name!r} is of ONNX type "
                    f"{onnx.TensorProto.DataType.Name(t)}; the mask and class outputs must be "
                    "float scores (export them before any argmax / threshold)"
                )

    # ---- probe the source: shapes, activations ----------------------------------------------
    batch = 2 if dynamic_batch else 1
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0.0, 255.0, (batch, 1, *size)).astype(np.float32)
    feed = _user_input(pixels, layout, scale, means, stds).astype(_NP_OF[in_type])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(
            model.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
        wanted = [n for n in (mask_output, class_output) if n is not None]
        got = dict(zip(wanted, sess.run(wanted, {vin.name: feed}), strict=True))
    except Exception as exc:  # ORT's own exception types
        first = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ""
        raise ModelError(
            f"{src.name}: ONNX Runtime cannot run it on a {_shape_text(list(feed.shape))} "
            f"{feed.dtype} input ({type(exc).__name__}: {first}); check layout / size / color, "
            "or re-export the model"
        ) from exc

    mask_ch = 1
    if mask_output is not None:
        mask_ch = _check_mask(
            src.name, mask_output, got[mask_output], layout, mask_activation, batch
        )
    if class_output is not None:
        _check_classes(src.name, class_output, got[class_output], names, class_activation, batch)

    # ---- the adapter ------------------------------------------------------------------------
    import onnx.compose

    g = onnx.compose.add_prefix_graph(g, _PREFIX)  # a renamed copy: names cannot clash
    src_in = _PREFIX + vin.name
    bld = _Builder(opset)
    x = "input"
    if layout == "nhwc":
        x = bld.op("Transpose", [x], perm=[0, 2, 3, 1])
    a = np.asarray([255.0 / (scale * s) for s in stds], np.float32)
    b = np.asarray([-m / s for m, s in zip(means, stds, strict=True)], np.float32)
    cshape = (1, n_ch, 1, 1) if layout == "nchw" else (1, 1, 1, n_ch)
    x = bld.op("Mul", [x, bld.const(a.reshape(cshape), what="gain")])
    if np.any(b != 0):
        x = bld.op("Add", [x, bld.const(b.reshape(cshape), what="offset")])
    if in_type != _ONNX_FLOAT:
        x = bld.op("Cast", [x], to=in_type)
    bld.op("Identity", [x], src_in)

    def as_float(name: str) -> str:
        t = outs[name].type.tensor_type.elem_type
        return _PREFIX + name if t == _ONNX_FLOAT else bld.op("Cast", [_PREFIX + name], to=1)

    cl = None
    if class_output is not None:
        z = as_float(class_output)
        if class_activation == "softmax":
            z = bld.op("Log", [bld.op("Max", [z, bld.const(_P_TINY, what="tiny")])])
        cl = z
    if mask_output is not None:
        m = as_float(mask_output)
        rank = got[mask_output].ndim
        if rank == 3:
            m = bld.op("Unsqueeze", [m, bld.const([1], np.int64, "axes")])
        elif layout == "nhwc":
            m = bld.op("Transpose", [m], perm=[0, 3, 1, 2])
        if mask_ch == 2:
            lo, hi = bld.slice(m, 1, 0, 1), bld.slice(m, 1, 1, 2)
            if mask_activation == "softmax":
                tiny = bld.const(_P_TINY, what="tiny")
                lo = bld.op("Log", [bld.op("Max", [lo, tiny])])
                hi = bld.op("Log", [bld.op("Max", [hi, tiny])])
            m = bld.op("Sub", [hi, lo])
        elif mask_activation == "sigmoid":
            p = bld.op(
                "Min",
                [
                    bld.op("Max", [m, bld.const(_P_EPS, what="eps")]),
                    bld.const(1.0 - _P_EPS, what="one_minus_eps"),
                ],
            )
            q = bld.op("Sub", [bld.const(1.0, what="one"), p])
            m = bld.op("Sub", [bld.op("Log", [p]), bld.op("Log", [q])])
        mask_final = bld.op("Identity", [m], "mask_logits")
    else:  # classification only: one whole-frame cell, logit(1 - P(normal))
        assert cl is not None
        if NORMAL in names:
            k = names.index(NORMAL)
            rest = [i for i in range(len(names)) if i != k]
            zr = bld.op("Gather", [cl, bld.const(rest, np.int64, "rest")], axis=1)
            zn = bld.op("Gather", [cl, bld.const([k], np.int64, "normal")], axis=1)
            lse = bld.reduce("ReduceLogSumExp", zr, [1], 1)
            cell = bld.op("Sub", [lse, zn])  # log(sum_others p) - log p_normal
        else:
            z0 = bld.slice(cl, 1, 0, 1)
            cell = bld.op(
                "Add",
                [
                    bld.op("Mul", [z0, bld.const(0.0, what="zero")]),
                    bld.const(_NO_NORMAL_LOGIT, what="abnormal"),
                ],
            )
        mask_final = bld.op("Unsqueeze", [cell, bld.const([2, 3], np.int64, "axes")], "mask_logits")
    if cl is None:  # segmentation only: P(lesion) = the largest lesion probability
        mx = bld.reduce("ReduceMax", mask_final, [2, 3], 0)  # [B, 1]
        zero = bld.op("Mul", [mx, bld.const(0.0, what="zero")])
        parts = [zero if c == NORMAL else mx for c in names]
        bld.op("Concat", parts, "class_logits", axis=1)
    else:
        bld.op("Identity", [cl], "class_logits")

    # ---- assemble: input, adapter, the user's graph, the two contract outputs ----------------
    from onnx import TensorProto, helper

    bdim: str | int = "batch" if dynamic_batch else 1
    mh, mw = _mask_grid(got, mask_output, layout)
    new = helper.make_graph(
        [*bld.nodes[: _front_count(bld)], *g.node, *bld.nodes[_front_count(bld) :]],
        f"sonoedge import of {g.name or src.stem}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [bdim, 1, *size])],
        [
            helper.make_tensor_value_info("mask_logits", TensorProto.FLOAT, [bdim, 1, mh, mw]),
            helper.make_tensor_value_info("class_logits", TensorProto.FLOAT, [bdim, len(names)]),
        ],
        initializer=[*g.initializer, *bld.inits],
        value_info=[v for v in g.value_info],
    )
    new.sparse_initializer.extend(g.sparse_initializer)
    _prune(new)
    am = helper.make_model(new, opset_imports=list(model.opset_import))
    am.ir_version = model.ir_version
    am.functions.extend(model.functions)
    am.producer_name = "sonoedge import"
    am.doc_string = f"{src.name} wrapped to the sonoedge model contract (export.importer)"

    prov = {
        "import": {
            "source": src.name,
            "source_sha256": _sha256_file(src),
            "external_data_inlined": external,
            "opset": opset,
            "input": {
                "name": vin.name,
                "dtype": str(np.dtype(_NP_OF[in_type])),
                "shape": [d if isinstance(d, int) else None for d in dims],
                "layout": layout,
                "color": color,
                "channels": n_ch,
                "size": list(size),
                "batch": "dynamic" if dynamic_batch else 1,
                "scale": float(scale),
                "mean": list(means),
                "std": list(stds),
                "formula": "(pixel / scale - mean[c]) / std[c], pixel 0..255 gray in every channel",
            },
            "mask": None
            if mask_output is None
            else {"output": mask_output, "activation": mask_activation, "channels": mask_ch},
            "classes": None
            if class_output is None
            else {"output": class_output, "activation": class_activation},
            "synthesized": None
            if mask_output is not None and class_output is not None
            else (
                "class_logits: [0 for 'normal', max mask logit] (segmentation-only)"
                if class_output is None
                else "mask_logits: 1x1 logit(1 - P(normal)) (classification-only)"
                if NORMAL in names
                else f"mask_logits: 1x1 constant {_NO_NORMAL_LOGIT} (classification-only, no "
                "'normal' class: every frame one whole-frame lesion)"
            ),
            "importer": "export.importer.import_onnx",
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(_provenance or {}),
        }
    }
    md = Metadata(
        arch=f"imported:{src.stem}",
        class_names=names,
        channels=("image",),
        input_size=size,
        mean=(0.0,),
        std=(1.0,),
        outputs={"mask_logits": "mask_logits", "class_logits": "class_logits", "features": None},
        head=None,
        mask_threshold=float(threshold),
        min_lesion_area_px=int(min_lesion_area_px),
        precision="fp32",
        provenance=prov,
    )
    tmp = _part(out)
    try:
        if am.ByteSize() > _MAX_INLINE_BYTES:
            raise ModelError(
                f"{src.name}: {am.ByteSize() / 1e9:.2f} GB does not fit one .onnx file (2 GB); "
                "export a smaller model or FP16 weights"
            )
        try:
            onnx.checker.check_model(am)
        except onnx.checker.ValidationError as exc:
            raise ModelError(
                f"{src.name}: the wrapped graph fails onnx.checker ({str(exc)[:300]}); the "
                "source graph itself may be invalid: check it with onnx.checker.check_model"
            ) from exc
        onnx.save(am, str(tmp))
        parity = _parity(
            tmp,
            pixels,
            got,
            mask_output,
            class_output,
            mask_activation,
            class_activation,
            layout,
            names,
        )
        md.accuracy = {"parity": parity}
        embed_metadata(tmp, md)
        _check_loads(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".tmp").unlink(missing_ok=True)
    return out


def _front_count(bld: _Builder) -> int:
    """Adapter nodes before the user's graph: those up to the Identity feeding its input."""
    for i, n in enumerate(bld.nodes):
        if n.op_type == "Identity" and n.output[0].startswith(_PREFIX):
            return i + 1
    return 0


def _user_input(
    pixels: np.ndarray, layout: str, scale: float, means: Sequence[float], stds: Sequence[float]
) -> np.ndarray:
    """The documented preprocessing: ``(pixel / scale - mean[c]) / std[c]`` of ``(B, 1, h, w)``
    gray pixels, one gray copy per channel, in ``layout`` (float64 maths, float32 out)."""
    p = pixels.astype(np.float64) / float(scale)
    x = np.concatenate([(p - m) / s for m, s in zip(means, stds, strict=True)], axis=1)
    if layout == "nhwc":
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def _mask_planes(a: np.ndarray, layout: str) -> np.ndarray:
    """A probed mask output as ``(B, C, h, w)``."""
    if a.ndim == 3:
        return a[:, None]
    return a if layout == "nchw" else a.transpose(0, 3, 1, 2)


def _mask_grid(got: dict[str, np.ndarray], mask_output: str | None, layout: str) -> tuple[int, int]:
    if mask_output is None:
        return 1, 1
    p = _mask_planes(got[mask_output], layout)
    return int(p.shape[2]), int(p.shape[3])


def _check_mask(
    src: str, name: str, a: np.ndarray, layout: str, activation: str, batch: int
) -> int:
    """Validate the probed mask output; returns its channel count (1 or 2)."""
    want = "[B, 1|2, h, w]" if layout == "nchw" else "[B, h, w, 1|2]"
    shape = list(a.shape)
    if a.ndim not in (3, 4):
        raise ModelError(
            f"{src}: mask output {name!r} has shape {shape} (rank {a.ndim}); a mask is {want} "
            "or [B, h, w]: pass the segmentation output as mask_output (a 3-D volume or a "
            "flattened mask cannot be imported)"
        )
    if a.shape[0] != batch:
        raise ModelError(
            f"{src}: mask output {name!r} has shape {shape} for a batch of {batch}: its first "
            "axis must be the batch; re-export with the batch axis first"
        )
    planes = _mask_planes(a, layout)
    ch = planes.shape[1]
    if ch not in (1, 2):
        flip = (
            " (the other layout's channel axis fits: check layout)"
            if (a.ndim == 4 and (a.shape[1] if layout == "nhwc" else a.shape[3]) in (1, 2))
            else ""
        )
        raise ModelError(
            f"{src}: mask output {name!r} has shape {shape}: {ch} channels on the {layout} "
            f"channel axis; a lesion mask is {want}{flip}. For a multi-class segmentation, "
            "export the lesion channel (or background + lesion) as its own output"
        )
    if min(planes.shape[2:]) < 1:
        raise ModelError(f"{src}: mask output {name!r} has an empty axis {shape}")
    if not np.isfinite(a).all():
        raise ModelError(f"{src}: mask output {name!r} is NaN / inf on a probe input")
    if activation == "softmax" and ch != 2:
        raise ModelError(
            f"{src}: mask output {name!r} has 1 channel, mask_activation='softmax' needs 2 "
            "(background, lesion): pass mask_activation='sigmoid' or 'logits'"
        )
    if activation == "sigmoid" and ch != 1:
        raise ModelError(
            f"{src}: mask output {name!r} has 2 channels; mask_activation='sigmoid' is for one "
            "lesion-probability channel: pass 'softmax' (2-channel probabilities) or 'logits'"
        )
    if activation in ("sigmoid", "softmax"):
        lo, hi = float(a.min()), float(a.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ModelError(
                f"{src}: mask output {name!r} ranges over [{lo:.3g}, {hi:.3g}] on a probe "
                f"input: not probabilities, as mask_activation={activation!r} says; pass "
                "mask_activation='logits'"
            )
        if activation == "softmax":
            s = planes.astype(np.float64).sum(1)
            if np.abs(s - 1).max() > 1e-3:
                raise ModelError(
                    f"{src}: mask output {name!r}'s two channels sum to "
                    f"{float(s.min()):.3g}..{float(s.max()):.3g}, not 1: not a softmax; pass "
                    "mask_activation='logits' (two-class logits) instead"
                )
    return int(ch)


def _check_classes(
    src: str, name: str, a: np.ndarray, names: Sequence[str], activation: str, batch: int
) -> None:
    if a.ndim != 2 or a.shape[0] != batch:
        raise ModelError(
            f"{src}: class output {name!r} has shape {list(a.shape)} for a batch of {batch}; "
            "class scores are [B, K]: pass the classification output as class_output (flatten "
            "[B, K, 1, 1] in the model before exporting)"
        )
    if a.shape[1] != len(names):
        raise ModelError(
            f"{src}: class output {name!r} gives {a.shape[1]} scores per frame but classes "
            f"names {len(names)} ({', '.join(names)}); pass all {a.shape[1]} class names in the "
            "model's output order"
        )
    if not np.isfinite(a).all():
        raise ModelError(f"{src}: class output {name!r} is NaN / inf on a probe input")
    if activation == "softmax":
        s = a.astype(np.float64).sum(1)
        if float(a.min()) < -1e-6 or float(a.max()) > 1 + 1e-6 or np.abs(s - 1).max() > 1e-3:
            raise ModelError(
                f"{src}: class output {name!r} is not probabilities summing to 1 (range "
                f"[{float(a.min()):.3g}, {float(a.max()):.3g}], sums {float(s.min()):.3g}.."
                f"{float(s.max()):.3g}); pass class_activation='logits'"
            )
    else:
        s = a.astype(np.float64).sum(1)
        if float(a.min()) >= 0 and float(a.max()) <= 1 and np.abs(s - 1).max() < 1e-4:
            log.warning(
                "%s: class output %r sums to 1 on the probe like probabilities; if the model "
                "applies softmax itself, pass class_activation='softmax'",
                src,
                name,
            )


def _softmax(z: np.ndarray, axis: int = 1) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


def source_probabilities(
    outputs: dict[str, np.ndarray],
    *,
    classes: Sequence[str],
    mask_output: str | None,
    mask_activation: str = "logits",
    class_output: str | None = None,
    class_activation: str = "logits",
    layout: str = "nchw",
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The user's documented post-processing of their own outputs: ``(lesion probability
    (B, h', w') or None, class probabilities (B, K) or None)`` -- what an imported artifact must
    reproduce (the import-time parity check and the tests use it)."""
    prob = None
    if mask_output is not None:
        planes = _mask_planes(outputs[mask_output], layout).astype(np.float64)
        if planes.shape[1] == 2:
            prob = planes[:, 1] if mask_activation == "softmax" else _softmax(planes)[:, 1]
        else:
            prob = planes[:, 0] if mask_activation == "sigmoid" else _sigmoid(planes[:, 0])
    cls = None
    if class_output is not None:
        a = outputs[class_output].astype(np.float64)
        cls = a / a.sum(1, keepdims=True) if class_activation == "softmax" else _softmax(a)
    del classes
    return prob, cls


def _parity(
    artifact: Path,
    pixels: np.ndarray,
    got: dict[str, np.ndarray],
    mask_output: str | None,
    class_output: str | None,
    mask_activation: str,
    class_activation: str,
    layout: str,
    names: Sequence[str],
) -> dict[str, Any]:
    """Run the wrapped graph on the probe pixels as the SDK feeds them (pixel / 255) and compare
    the probabilities the SDK derives (sigmoid of mask_logits, softmax of class_logits) with the
    source's documented ones on the same frames. A difference is an adapter bug: ModelError."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(artifact), so, providers=["CPUExecutionProvider"])
    ml, cl = sess.run(["mask_logits", "class_logits"], {"input": pixels / np.float32(255.0)})
    prob, cls = source_probabilities(
        got,
        classes=names,
        mask_output=mask_output,
        mask_activation=mask_activation,
        class_output=class_output,
        class_activation=class_activation,
        layout=layout,
    )
    diffs: dict[str, float] = {}
    if prob is not None:
        diffs["mask_probability"] = float(np.abs(_sigmoid(ml[:, 0]) - prob).max())
    if cls is not None:
        diffs["class_probabilities"] = float(np.abs(_softmax(cl) - cls).max())
    elif prob is not None:  # segmentation only: P(lesion) = max lesion probability
        k = next(i for i, c in enumerate(names) if c != NORMAL)
        diffs["class_probabilities"] = float(
            np.abs(_softmax(cl)[:, k] - prob.reshape(len(prob), -1).max(1)).max()
        )
    if cls is not None and prob is None and NORMAL in names:
        k = list(names).index(NORMAL)
        diffs["mask_probability"] = float(np.abs(_sigmoid(ml[:, 0, 0, 0]) - (1 - cls[:, k])).max())
    worst = max(diffs.values())
    if not worst <= _PARITY_ATOL:
        raise ModelError(
            f"the imported graph's probabilities differ from the source's by {worst:.3g} "
            f"({diffs}, tolerance {_PARITY_ATOL:g}): the adapter does not reproduce the model; "
            "this is a sonoedge bug, please report it with the model's input / output shapes"
        )
    return {
        "max_abs_diff": diffs,
        "tolerance": _PARITY_ATOL,
        "frames": int(pixels.shape[0]),
        "reference": "the source ONNX through ONNX Runtime CPU on its documented preprocessing "
        "and output activations (uniform-noise probe frames)",
    }


def _check_loads(path: Path) -> None:
    """The artifact through the SDK's own loader (digest, metadata, output roles) and one
    inference: what Analyzer will do first."""
    from sdk.backends.onnxruntime import OnnxRuntimeBackend

    b = OnnxRuntimeBackend(path, device="cpu", threads=1)
    b.check_outputs = True
    try:
        b.load()
        md = b.metadata
        assert md is not None
        b.infer(np.zeros((1, 1, *md.input_size), np.float32))
    finally:
        b.close()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- import_torch


def _flat_outputs(out: Any) -> list[tuple[str, Any]]:
    if isinstance(out, dict):
        return [(str(k), v) for k, v in out.items()]
    if isinstance(out, list | tuple):
        return [(f"output{i}", v) for i, v in enumerate(out)]
    return [("output", out)]


def _unsupported_op(exc: BaseException) -> str | None:
    text = f"{exc} {exc.__cause__ or ''}"
    for pat in (r"operator '([\w:.]+)'", r"\b((?:aten|prim|onnx)::\w+)", r"Python operator (\w+)"):
        m = re.search(pat, text)
        if m:
            return m.group(1)
    return None


def import_torch(
    module: Any,
    dst: str | os.PathLike[str],
    *,
    example_input: Any,
    classes: Sequence[str] | str,
    mask_output: str | int | None,
    class_output: str | int | None = None,
    opset: int = 17,
    **kwargs: Any,
) -> Path:
    """A user's ``torch.nn.Module`` → ONNX (torch.onnx) → :func:`import_onnx` → ``dst``.

    ``example_input``: one batch in the model's own layout and normalization, e.g.
    ``torch.zeros(1, 3, 256, 256)``; its height and width become the artifact's input size, its
    batch axis is exported dynamic. Outputs are named by the module's return value: a dict's
    keys, ``output0``, ``output1``... for a tuple / list, ``output`` for one tensor;
    ``mask_output`` / ``class_output`` take those names or positions (ints). Every other keyword
    is :func:`import_onnx`'s (``input`` excepted: the module has one).

    Exporter: the TorchScript-based ``torch.onnx.export(dynamo=False)`` first -- the one the
    project's own export uses, mature for conv nets and needing nothing more than torch -- then,
    when it cannot export an op and ``onnxscript`` is installed, the ``torch.export``-based one
    (``dynamo=True``). When neither can, :class:`ModelError` names the op.
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise InputError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4:
        raise InputError(
            "example_input must be one 4-D tensor batch in the model's layout, e.g. "
            f"torch.zeros(1, 1, 256, 256), got {type(example_input).__name__}"
            + (f" of shape {tuple(example_input.shape)}" if hasattr(example_input, "shape") else "")
        )
    if "input" in kwargs:
        raise InputError("import_torch feeds the module's one input; do not pass input=")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise InputError(f"opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    layout = kwargs.get("layout", "nchw")
    if layout in _LAYOUTS and "size" not in kwargs:
        kwargs["size"] = tuple(
            int(v)
            for v in (example_input.shape[2:] if layout == "nchw" else example_input.shape[1:3])
        )
    x = example_input.detach().to("cpu", torch.float32)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            flat = _flat_outputs(module(x))
        out_names = [n for n, _ in flat]
        if not all(isinstance(v, torch.Tensor) for _, v in flat):
            raise InputError(
                "the module must return a tensor, a tuple / list of tensors or a dict of tensors; "
                f"got {[type(v).__name__ for _, v in flat]}"
            )

        def pick(v: str | int | None, role: str) -> str | None:
            if v is None:
                return None
            if isinstance(v, int) and not isinstance(v, bool):
                if not 0 <= v < len(out_names):
                    raise InputError(f"{role}={v}: the module returns {len(out_names)} outputs")
                return out_names[v]
            if v not in out_names:
                raise ModelError(
                    f"the module has no output {v!r} ({role}); it returns {out_names}: pass one "
                    "of those names or a position"
                )
            return str(v)

        m_name, c_name = pick(mask_output, "mask_output"), pick(class_output, "class_output")

        class _Flat(torch.nn.Module):
            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return tuple(v for _, v in _flat_outputs(self.inner(t)))

        wrapped = _Flat(module)
        with tempfile.TemporaryDirectory() as td:
            path = Path(td) / f"{type(module).__name__}.onnx"
            exporter = _export_torch(wrapped, x, path, out_names, opset)
            return import_onnx(
                path,
                dst,
                classes=classes,
                mask_output=m_name,
                class_output=c_name,
                input="input",
                _provenance={
                    "torch": {
                        "module": f"{type(module).__module__}.{type(module).__qualname__}",
                        "exporter": exporter,
                        "torch": torch.__version__,
                        "opset": opset,
                        "example_input": list(x.shape),
                    }
                },
                **kwargs,
            )
    finally:
        module.train(was_training)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """File descriptor 1 to /dev/null for the block (C++ output that sys.stdout never sees)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 (an embedded interpreter): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _export_torch(wrapped: Any, x: Any, path: Path, out_names: list[str], opset: int) -> str:
    """Export with the TorchScript exporter, else the dynamo one; the exporter's name."""
    import importlib.util
    import warnings

    import torch

    axes = {n: {0: "batch"} for n in ["input", *out_names]}
    first: BaseException | None = None
    # The TorchScript exporter prints the whole IR graph on a failure (C++, to file descriptor 1,
    # whatever its ONNX log setting): the error below names the op, so that output is dropped.
    log_was = bool(torch._C._jit_is_onnx_log_enabled())
    try:
        torch._C._jit_set_onnx_log_enabled(False)
        with warnings.catch_warnings(), torch.no_grad(), _quiet_stdout():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                (x,),
                str(path),
                input_names=["input"],
                output_names=out_names,
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
        return "torch.onnx.export (TorchScript), dynamic batch"
    except Exception as exc:  # the exporter raises many types (UnsupportedOperatorError, ...)
        first = exc
    finally:
        torch._C._jit_set_onnx_log_enabled(log_was)
    op = _unsupported_op(first)
    second = "not tried: it needs onnxscript (pip install onnxscript)"
    if importlib.util.find_spec("onnxscript") is not None:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                prog = torch.onnx.export(
                    wrapped,
                    (x,),
                    input_names=["input"],
                    output_names=out_names,
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
                    opset_version=max(opset, 18),
                    dynamo=True,
                )
                prog.save(str(path))
            return "torch.onnx.export (torch.export / dynamo), dynamic batch"
        except Exception as exc:
            op = op or _unsupported_op(exc)
            second = f"failed too ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    what = f"op {op}" if op else f"the module ({type(first).__name__}: {str(first)[:200]})"
    raise ModelError(
        f"torch.onnx cannot export {what}: the TorchScript exporter (opset {opset}) refused it; "
        f"the torch.export-based exporter {second}. Replace that op in the model with ONNX-"
        "exportable ones, or export the ONNX yourself (opset >= 13) and use import_onnx"
    ) from first


# --------------------------------------------------------------------------- quantize


def quantize(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] = "synthetic",
    target: str = "cpu",
    budget: float = 0.01,
    calib_frames: int = 300,
    eval_frames: int = 200,
    report_frames: int = 200,
    seed: int = 0,
    threads: int = 1,
    min_calib_frames: int = 300,
) -> Path:
    """An FP32 artifact (imported or ours) → INT8 at ``dst`` within ``budget`` of it, plus the
    export report (``<dst stem>.report.md / .json / .png`` beside ``dst``).

    ``target="cpu"``: the ONNX Runtime CPU recipe (:func:`export.pipeline.quantize_cpu`).
    ``target="tensorrt"``: the TensorRT explicit-quantization Q/DQ graph
    (:func:`export.pipeline.quantize_trt`) at ``dst``, and ``<dst stem>.plan`` built from it
    where TensorRT and a GPU exist (:func:`export.pipeline.build_trt`; the report says
    "skipped" otherwise).

    Frames (``data``):

    * an annotated folder (BUSI layout ``benign/ malignant/ normal/`` with ``*_mask.png``, or a
      folder with ``labels.csv``) or ``"synthetic"`` for a model of the phantoms' classes:
      calibration from the training split, the budget on held-out frames of the validation split
      (Dice and accuracy of INT8 within ``budget`` of the FP32 model's, against the ground truth).
    * a plain image folder (images, no labels), or ``"synthetic"`` for a model of other classes:
      calibration on a seeded part of the images, the budget on the held-out rest (at most
      ``eval_frames``) as *agreement with the FP32 model*: its masks and labels are the
      reference (FP32 scores Dice 1 and accuracy 1 by definition; INT8 must stay within
      ``budget`` of that). The report measures agreement the same way.

    Raises:
        InputError: bad arguments, too few frames. ModelError: not an FP32 sonoedge artifact, or
            INT8 misses the budget even with every quantized node back in float.
    """
    target = _choice(target, "target", ("cpu", "tensorrt"))
    for name, v, lo in (
        ("calib_frames", calib_frames, 1),
        ("eval_frames", eval_frames, 1),
        ("report_frames", report_frames, 1),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise InputError(f"{name} must be an integer >= {lo}, got {v!r}")
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 <= budget < 1:
        raise InputError(f"budget must be in [0, 1) (0.01 = 1 point), got {budget!r}")
    src = Path(src)
    if not src.is_file():
        raise ModelError(f"{src}: no such artifact; import the model first (export.import_onnx)")
    # torch comes with export.pipeline (its data layer): imported once the arguments hold.
    from export.pipeline import (
        Artifact,
        build_trt,
        calibration_frames,
        heldout_set,
        quantize_cpu,
        quantize_trt,
        report,
    )
    from export.pipeline import report_frames as _report_frames
    from sdk import synthetic
    from sdk.artifact import read_onnx_file_metadata

    try:
        md = read_onnx_file_metadata(src)
    except ModelError as exc:
        if "carries no sonoedge metadata" not in str(exc):
            raise
        raise ModelError(
            f"{src} is a plain ONNX model, not a sonoedge artifact: import it first "
            "(export.import_onnx / `sonoedge import`), then quantize the artifact"
        ) from exc
    if md.precision != "fp32":
        raise InputError(f"{src.name} is a {md.precision} artifact; quantize the FP32 one")
    out = _dst(dst, src)
    data_s = str(data)
    labelled = _labelled(data_s, md.class_names, synthetic.LABELS)
    if labelled:
        calib = calibration_frames(data, md, calib_frames, seed, min_frames=min_calib_frames)
        ev = heldout_set(src, data, eval_frames, seed)
        frames: Any = _report_frames(data, md.class_names, report_frames, md.input_size, seed)
        reference = f"ground truth of {len(ev)} held-out frames of {data_s}"
    else:
        calib, ev, frames = _agreement_sets(
            src, md, data_s, calib_frames, eval_frames, report_frames, seed, min_calib_frames
        )
        reference = (
            f"agreement with the FP32 model on {len(ev)} held-out frames of {data_s} "
            "(no labels: its masks and labels are the reference)"
        )
    fn = quantize_cpu if target == "cpu" else quantize_trt
    path = fn(
        src,
        calib,
        out,
        eval_frames=ev,
        budget=budget,
        min_frames=min_calib_frames,
        threads=threads,
    )
    _note_reference(path, reference, data_s)
    rows = [
        Artifact(f"{src.stem} fp32", "onnx", src, reference=True),
        Artifact(
            f"{out.stem} int8 ({'cpu' if target == 'cpu' else 'tensorrt qdq'})",
            "onnx-int8" if target == "cpu" else "onnx-qdq",
            path,
            note="" if target == "cpu" else "TensorRT Q/DQ graph, run here by ONNX Runtime CPU",
        ),
    ]
    if target == "tensorrt":
        rows.append(build_trt(path, out.with_suffix(".plan"), "int8", name=f"{out.stem} trt-int8"))
    report(
        rows,
        frames,
        out.parent,
        threads=threads,
        warmup=min(3, len(frames)),
        title=f"sonoedge quantize: {src.name} → {out.name} ({target}); {reference}",
        stem=f"{out.stem}.report",
    )
    return path


def _labelled(data: str, classes: Sequence[str], phantom_classes: Sequence[str]) -> bool:
    """Ground truth available: phantoms of the model's classes, a BUSI / CSV folder."""
    if data == "synthetic":
        return sorted(classes) == sorted(phantom_classes)
    p = Path(data)
    if p.suffix.lower() == ".csv" or (p / "labels.csv").is_file():
        return True
    if not p.is_dir():
        raise InputError(f"data {data!r} is neither 'synthetic' nor a folder; check the path")
    return any(e.is_dir() and not e.name.startswith(".") for e in p.iterdir())


def _images(data: str, n: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """Unlabelled gray uint8 frames: a plain image folder's (every one), or ``n`` phantoms."""
    if data == "synthetic":
        from export.data import SyntheticFrames
        from export.pipeline import CALIB_SEED

        ph = SyntheticFrames(n, size, seed + CALIB_SEED, cache=False)
        return [ph.get(i)[0] for i in range(n)]
    from sdk.sources import ImageSequenceSource

    return [f.image for f in ImageSequenceSource(data, color="gray")]


def _agreement_sets(
    src: Path,
    md: Any,
    data: str,
    n_calib: int,
    n_eval: int,
    n_report: int,
    seed: int,
    min_calib: int,
) -> tuple[list[np.ndarray], Any, list[tuple[np.ndarray, np.ndarray, int]]]:
    """Calibration frames, held-out EvalSet and report frames whose reference is the FP32
    model itself (masks: its mask logits > 0 on the mask grid; labels: its argmax)."""
    from export.pipeline import EvalSet, _class_probs, _session
    from sdk import kernels
    from sdk.analyzer import Analyzer

    images = _images(data, n_calib + n_eval, md.input_size, seed)
    order = np.random.default_rng([seed, 16]).permutation(len(images)).tolist()
    n_ev = min(n_eval, max(1, len(images) // 5)) if data != "synthetic" else n_eval
    ev_idx, cal_idx = order[:n_ev], order[n_ev:][:n_calib]
    if len(cal_idx) < max(1, min_calib):
        raise InputError(
            f"{data}: {len(images)} images leave {len(cal_idx)} for calibration after {n_ev} "
            f"held out; calibration needs >= {min_calib}: add images"
        )

    def pre(img: np.ndarray) -> np.ndarray:
        return kernels.preprocess(
            img, md.input_size, md.channels, md.sigma, mean=md.mean, std=md.std
        )

    calib = [pre(images[i]) for i in cal_idx]
    x = np.stack([pre(images[i]) for i in ev_idx])
    sess = _session(src, 1)
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x}), strict=True))
    masks = out[md.outputs["mask_logits"]][:, 0] > 0.0
    labels = _class_probs(out, md).argmax(1).astype(np.int64)
    ev = EvalSet(x, masks, labels, md.class_names)
    frames = []
    with Analyzer(src, threads=1, smoothing=0.0) as a:
        for i in ev_idx[:n_report]:
            r = a.run(images[i])
            p = [r.raw_probs[c] for c in md.class_names]
            frames.append((images[i], r.mask, int(np.argmax(p))))
    return calib, ev, frames


def _note_reference(path: Path, reference: str, data: str) -> None:
    """Say in the INT8 artifact's metadata what its accuracy was measured against."""
    from export.onnx_export import embed_metadata
    from sdk.artifact import read_onnx_file_metadata

    md = read_onnx_file_metadata(path)
    md.accuracy = {**md.accuracy, "int8_reference": reference}
    q = dict(md.provenance.get("quantization") or {})
    q["data"] = data
    md.provenance["quantization"] = q
    embed_metadata(path, md)

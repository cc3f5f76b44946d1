"""Settings of :class:`sdk.Analyzer` and :class:`sdk.pipeline.FramePipeline`: the argument checks
they share (each returns the normalized value or raises :class:`~sdk.errors.InputError` naming
the argument), the embedded default model, and the Analyzer's forwarding of per-call settings."""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import InputError, ModelError

__all__ = [
    "DEFAULT_MODEL_DIR",
    "MAX_THREADS_PER_CPU",
    "PipelineSetting",
    "check_bit_depth",
    "check_real",
    "check_refiner",
    "check_threads",
    "default_model",
    "default_refiner",
]

#: ``threads`` may be at most this many times the machine's logical CPUs (more only adds
#: thread start-up and memory: 100000 ONNX Runtime threads took minutes and 4.5 GB to load).
MAX_THREADS_PER_CPU = 4


def check_bit_depth(bit_depth: Any) -> int | None:
    """None, or an integer in [8, 32]; anything else raises :class:`InputError`."""
    if bit_depth is None:
        return None
    if (
        isinstance(bit_depth, bool | np.bool_)
        or not isinstance(bit_depth, int | np.integer)
        or not 8 <= int(bit_depth) <= 32
    ):
        raise InputError(
            f"bit_depth must be None or an integer in [8, 32] (the scanner's bits per pixel, "
            f"e.g. 12), got {bit_depth!r}"
        )
    return int(bit_depth)


def check_real(
    value: Any,
    name: str,
    lo: float | None = None,
    hi: float | None = None,
    what: str = "",
    hi_open: bool = False,
) -> float:
    """A real number (not a bool, not a string), finite, in [lo, hi] (or [lo, hi)), as float;
    :class:`InputError` naming ``name`` otherwise."""
    if lo is None:
        rng = ""
    else:
        rng = f" in [{lo:g}, {hi:g}{')' if hi_open else ']'}"
    need = f"{name} must be a finite number{rng}" + (f" ({what})" if what else "")
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise InputError(f"{need}, got {type(value).__name__} {value!r}")
    f = float(value)
    if not math.isfinite(f) or (
        lo is not None and hi is not None and not (lo <= f < hi if hi_open else lo <= f <= hi)
    ):
        raise InputError(f"{need}, got {value!r}")
    return f


def check_backend_args(backend: Any, device: Any, spin: Any) -> None:
    """``backend`` and ``device`` strings, ``spin`` a bool; :class:`InputError` otherwise."""
    for name, value in (("backend", backend), ("device", device)):
        if not isinstance(value, str):
            raise InputError(
                f"{name} must be a string ('auto', or a name such as 'onnxruntime' / 'cpu'), "
                f"got {type(value).__name__} {value!r}"
            )
    if not isinstance(spin, bool | np.bool_):
        raise InputError(
            f"spin must be True or False (busy-wait within model calls), got "
            f"{type(spin).__name__} {spin!r}"
        )


def check_threads(threads: Any) -> int | None:
    """None, or an int in 1 .. MAX_THREADS_PER_CPU x the logical CPUs."""
    if threads is None:
        return None
    most = MAX_THREADS_PER_CPU * (os.cpu_count() or 1)
    if isinstance(threads, bool | np.bool_) or not isinstance(threads, int | np.integer):
        raise InputError(
            f"threads must be None or an integer in 1..{most} (the backend's CPU threads; "
            f"{os.cpu_count() or 1} logical CPUs here), got {type(threads).__name__} {threads!r}"
        )
    if not 1 <= int(threads) <= most:
        raise InputError(
            f"threads must be in 1..{most} ({MAX_THREADS_PER_CPU} x the {os.cpu_count() or 1} "
            f"logical CPUs; more only costs start-up time and memory), got {threads}; None "
            "lets the backend choose"
        )
    return int(threads)


#: Where the embedded default model lives (made by `sonoedge train --preset demo`).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "models"


def default_model(precision: str | None = None) -> Path:
    """Path of the embedded default model: ``"fp32"`` or ``"int8"`` (ONNX Runtime CPU QDQ).

    None (what ``sdk.Analyzer()`` uses) takes FP32: on the 2-core CPU it was measured faster
    (1.90 vs 2.35 ms per frame at 128×128: the model is small enough that Q/DQ overhead
    outweighs int8 arithmetic) and 1 accuracy point better. INT8 is there for targets whose
    int8 kernels pay off. See ``sdk/models/REPORT.md``.
    """
    if precision is None:
        precision = "fp32"
    if precision not in ("int8", "fp32"):
        raise InputError(f"precision must be 'int8' or 'fp32', got {precision!r}")
    path = DEFAULT_MODEL_DIR / f"default-{precision}.onnx"
    if not path.is_file():
        raise ModelError(
            f"the embedded default model ({path.name}) is not in this install; pass the path of "
            "an exported .onnx / .plan artifact, or make one with `sonoedge train --preset demo`"
        )
    return path


def default_refiner() -> Path:
    """Path of the embedded lesion refiner (``sdk/refiner.py``), trained behind the embedded
    default model's lesions: ``sdk.Analyzer()`` runs it; pass ``refiner=True`` to run it behind
    a model given by path (e.g. ``sdk.default_model("int8")``), ``refiner=False`` for none."""
    path = DEFAULT_MODEL_DIR / "default-refiner.onnx"
    if not path.is_file():
        raise ModelError(
            f"the embedded refiner ({path.name}) is not in this install; pass refiner=False, "
            "or the path of a refiner made by export.refiner"
        )
    return path


def check_refiner(refiner: object, model: object = None) -> Path | None:
    """``Analyzer(refiner=...)`` for the frame model ``model``: None -- the embedded refiner
    (:func:`default_refiner`) when ``model`` is None (the embedded default model), none
    otherwise; True -- the embedded one; a path -- that file (checked when the Analyzer loads);
    False -- none. Else :class:`InputError`."""
    if refiner is None:
        return default_refiner() if model is None else None
    if refiner is False:
        return None
    if refiner is True:
        return default_refiner()
    if isinstance(refiner, str | os.PathLike) and str(refiner):
        return Path(refiner)
    raise InputError(
        f"refiner must be True (the embedded one), False (none), None (the embedded one with the "
        f"embedded default model) or the path of a refiner .onnx; got {refiner!r}"
    )


class PipelineSetting:
    """An Analyzer attribute that its FramePipeline reads on every call (``smoothing``,
    ``bit_depth``, ``pixel_spacing_mm``): kept on the Analyzer, and assigning it after load
    reaches the bound pipeline too -- as when the Analyzer read it per call itself. Checked by
    the constructor; a later assignment is taken as given and checked where it is used (e.g.
    :func:`sdk.pipeline.to_uint8` checks ``bit_depth`` per frame)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else obj.__dict__[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value
        pipe = obj.__dict__.get("_pipeline")
        if pipe is not None:
            setattr(pipe, self.name, value)

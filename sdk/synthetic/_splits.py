"""Declarative splits of the phantom factor space: which frames a training / test set may hold.

A :class:`Split` is plain data (JSON round-trip): ``include`` rules (a frame must match at least
one, when any is given), ``exclude`` rules (a frame must match none) and optional ``labels``.
A *rule* maps factor names to conditions and matches when every condition holds:

* frame factors by name (``"frequency_mhz"``, ``"compounding"``, ``"geometry"``, ``"label"``...;
  :data:`sdk.synthetic._factors.FRAME_FACTORS`);
* lesion descriptors as ``"lesion.<name>"`` (``"lesion.margin"``, ``"lesion.posterior"``,
  ``"lesion.label"``...): the rule's lesion conditions must all hold for one same lesion.

A condition is a list of allowed values (``["linear"]``, ``[3, 5]``, ``[True]``) or a numeric
range ``{"min": lo, "max": hi}`` (either bound optional, both inclusive).

>>> train = Split("train", exclude=({"compounding": [3, 5]},))
>>> train.accepts({"compounding": 1}, []), train.accepts({"compounding": 3}, [])
(True, False)

The generator draws a frame's factors and descriptors first (cheap) and redraws, from the same
random stream, until the split accepts them: the frame stays a function of its seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdk.errors import InputError
from sdk.synthetic._factors import FRAME_FACTORS, LESION_FACTORS

__all__ = ["OOD_SPLITS", "OOD_TRAIN", "Split"]

Rule = Mapping[str, Any]


def _check_rule(rule: Rule) -> dict[str, Any]:
    if not isinstance(rule, Mapping) or not rule:
        raise InputError(f"a split rule must be a non-empty mapping of factor -> condition: {rule}")
    out: dict[str, Any] = {}
    for key, cond in rule.items():
        name = key[len("lesion.") :] if key.startswith("lesion.") else key
        known = LESION_FACTORS if key.startswith("lesion.") else FRAME_FACTORS
        if name not in known:
            raise InputError(
                f"unknown split factor {key!r}; frame factors: {list(FRAME_FACTORS)}, lesion "
                f"descriptors: {['lesion.' + n for n in LESION_FACTORS]}"
            )
        if isinstance(cond, Mapping):
            bad = set(cond) - {"min", "max"}
            if bad or not cond:
                raise InputError(f"range condition of {key!r} takes 'min' / 'max', got {cond}")
            out[key] = {k: float(v) for k, v in cond.items()}
        elif isinstance(cond, Sequence) and not isinstance(cond, str):
            out[key] = list(cond)
        else:
            raise InputError(
                f"condition of {key!r} must be a list of values or {{'min': .., 'max': ..}}, "
                f"got {cond!r}"
            )
    return out


def _holds(cond: Any, value: Any) -> bool:
    if isinstance(cond, dict):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return cond.get("min", -float("inf")) <= value <= cond.get("max", float("inf"))
    return value in cond


def _matches(rule: dict[str, Any], factors: Mapping[str, Any], lesions: Sequence[Mapping]) -> bool:
    frame = {k: c for k, c in rule.items() if not k.startswith("lesion.")}
    per_lesion = {k[len("lesion.") :]: c for k, c in rule.items() if k.startswith("lesion.")}
    if not all(k in factors and _holds(c, factors[k]) for k, c in frame.items()):
        return False
    if not per_lesion:
        return True
    return any(
        all(k in les and _holds(c, les[k]) for k, c in per_lesion.items()) for les in lesions
    )


@dataclass(frozen=True)
class Split:
    """A named region of the factor space (see the module docstring).

    Args:
        name: for reports and file names.
        include: rules; a frame must match at least one of them (when any is given).
        exclude: rules; a frame must match none of them.
        labels: image labels the split holds (``None``: all three); a split whose rules need a
            lesion (e.g. ``"lesion.margin"``) should name ``("benign", "malignant")``. A
            synthetic dataset drawn in the split cycles through them in this order, so repeats
            set proportions (``("benign", "benign", "malignant")``: two benign frames to one).
    """

    name: str = "all"
    include: tuple[Rule, ...] = ()
    exclude: tuple[Rule, ...] = ()
    labels: tuple[str, ...] | None = None
    _rules: tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        inc = tuple(_check_rule(r) for r in self.include)
        exc = tuple(_check_rule(r) for r in self.exclude)
        object.__setattr__(self, "include", tuple(dict(r) for r in self.include))
        object.__setattr__(self, "exclude", tuple(dict(r) for r in self.exclude))
        if self.labels is not None:
            labels = tuple(self.labels)
            bad = [x for x in labels if x not in ("benign", "malignant", "normal")]
            if bad or not labels:
                raise InputError(f"split labels must be benign / malignant / normal, got {labels}")
            object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "_rules", (inc, exc))

    def accepts(self, factors: Mapping[str, Any], lesions: Sequence[Mapping[str, Any]]) -> bool:
        """Whether a frame with these factors and lesion descriptors belongs to the split."""
        if self.labels is not None and factors.get("label") not in self.labels:
            return False
        inc, exc = self._rules
        if inc and not any(_matches(r, factors, lesions) for r in inc):
            return False
        return not any(_matches(r, factors, lesions) for r in exc)

    def intersect(self, other: Split, name: str | None = None) -> Split:
        """The frames both splits accept, as one split (plain data, like every split).

        Includes: every pair of rules merged (a frame must match one rule of each); excludes:
        both lists; labels: ``self``'s labels (in its order, repeats kept: they set the label
        cycle of a synthetic dataset) that ``other`` admits. A factor both rules of a pair
        condition is refused unless the conditions are equal (the generator would otherwise
        need a condition algebra nobody uses yet). The lesion conditions of a merged pair must
        hold for one same lesion: on a frame with several lesions that is stricter than the two
        splits together (where each could be met by another lesion).

        >>> a = Split("a", include=({"geometry": ["linear"]},))
        >>> b = Split("b", include=({"lesion.echo_pattern": ["hyperechoic"]},))
        >>> a.intersect(b).include
        ({'geometry': ['linear'], 'lesion.echo_pattern': ['hyperechoic']},)
        """
        if not isinstance(other, Split):
            raise InputError(f"a split intersects a Split, got {type(other).__name__}")
        inc: list[dict[str, Any]] = []
        if self.include and other.include:
            for r in self.include:
                for q in other.include:
                    clash = [k for k in set(r) & set(q) if r[k] != q[k]]
                    if clash:
                        raise InputError(
                            f"splits {self.name!r} and {other.name!r} both condition "
                            f"{sorted(clash)} differently in one rule; intersect them by hand"
                        )
                    inc.append({**r, **q})
        else:
            inc = [dict(r) for r in (self.include or other.include)]
        if self.labels is None:
            labels = other.labels
        else:
            labels = tuple(x for x in self.labels if other.labels is None or x in other.labels)
            if not labels:
                raise InputError(
                    f"splits {self.name!r} and {other.name!r} admit no common image label"
                )
        return Split(
            name or f"{self.name}&{other.name}",
            include=tuple(inc),
            exclude=tuple(self.exclude) + tuple(other.exclude),
            labels=labels,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (for ``info`` and reports); :meth:`from_dict` reads it back."""
        return {
            "name": self.name,
            "include": [dict(r) for r in self.include],
            "exclude": [dict(r) for r in self.exclude],
            "labels": None if self.labels is None else list(self.labels),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | Split) -> Split:
        """A split from :meth:`to_dict`'s form (a :class:`Split` is returned as is)."""
        if isinstance(d, Split):
            return d
        if not isinstance(d, Mapping):
            raise InputError(f"a split is a Split or a mapping, got {type(d).__name__}")
        unknown = set(d) - {"name", "include", "exclude", "labels"}
        if unknown:
            raise InputError(
                f"unknown split keys {sorted(unknown)}; use include / exclude / labels"
            )
        labels = d.get("labels")
        return cls(
            str(d.get("name", "split")),
            tuple(d.get("include", ())),
            tuple(d.get("exclude", ())),
            None if labels is None else tuple(labels),
        )


def _ood() -> dict[str, tuple[Split, Split]]:
    """Held-out factor regions: ``name -> (train split, test split)`` (see :data:`OOD_SPLITS`)."""
    pairs: dict[str, tuple[Split, Split]] = {}
    pairs["compounding"] = (
        Split("compounding-train", exclude=({"compounding": [3, 5]},)),
        Split("compounding-test", include=({"compounding": [3, 5]},)),
    )
    # 7-12 MHz in training (with 0.5 MHz guard bands), <= 6 / >= 14 MHz linear in test.
    pairs["frequency"] = (
        Split(
            "frequency-train",
            exclude=({"frequency_mhz": {"max": 6.5}}, {"frequency_mhz": {"min": 12.5}}),
        ),
        Split(
            "frequency-test",
            include=(
                {"frequency_mhz": {"max": 6.0}, "geometry": ["linear"]},
                {"frequency_mhz": {"min": 14.0}, "geometry": ["linear"]},
            ),
        ),
    )
    pairs["probe"] = (
        Split("probe-train", include=({"geometry": ["linear"]},)),
        Split("probe-test", include=({"geometry": ["curvilinear"]},)),
    )
    unseen = (
        {"lesion.label": ["benign"], "lesion.posterior": ["shadowing"]},
        {"lesion.label": ["benign"], "lesion.margin": ["spiculated", "angular"]},
        {"lesion.label": ["malignant"], "lesion.margin": ["circumscribed"]},
        {"lesion.label": ["malignant"], "lesion.posterior": ["enhancement"]},
    )
    pairs["descriptors"] = (
        Split("descriptors-train", exclude=unseen),
        Split("descriptors-test", include=unseen, labels=("benign", "malignant")),
    )
    pairs["processing"] = (
        Split(
            "processing-train",
            exclude=({"harmonic": [True]}, {"speckle_reduction": ["mid", "high"]}),
        ),
        Split(
            "processing-test",
            include=({"harmonic": [True], "speckle_reduction": ["mid", "high"]},),
        ),
    )
    pairs["dense"] = (
        Split("dense-train", exclude=({"composition": ["dense"]},)),
        Split("dense-test", include=({"composition": ["dense"]},)),
    )
    return pairs


#: The out-of-distribution suite: per held-out factor, ``(train split, test split)``. A model
#: meant for the suite trains on :data:`OOD_TRAIN` (every test region excluded at once) and is
#: scored on each test split and on :data:`OOD_TRAIN`'s own distribution (fresh seeds).
OOD_SPLITS: dict[str, tuple[Split, Split]] = _ood()

#: The training region of the whole suite: the intersection of every train split.
OOD_TRAIN = Split(
    "ood-train",
    include=({"geometry": ["linear"]},),
    exclude=tuple(r for tr, _ in OOD_SPLITS.values() for r in tr.exclude),
)

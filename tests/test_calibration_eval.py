"""benchmarks/calibration_eval.py: the ECE noise floor it reports, and a small real run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sdk.scope import ece


@pytest.fixture(scope="module")
def ce(load_benchmark):
    return load_benchmark("calibration_eval")


def _probs(rng, n):
    z = rng.normal(0.0, 2.0, (n, 3))
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def test_null_floor_is_what_a_calibrated_model_scores(ce) -> None:
    """Labels drawn from the probabilities themselves (a perfectly calibrated model): its ECE sits
    inside the null distribution; the floor shrinks with N roughly as 1/sqrt(N)."""
    rng = np.random.default_rng(1)
    p = _probs(rng, 400)
    y = (rng.random(400)[:, None] > np.cumsum(p, 1)).sum(1)
    null = ce.null_ece(p, np.random.default_rng(2), draws=100)
    assert np.quantile(null, 0.01) <= ece(p, y) <= np.quantile(null, 0.99)
    big = _probs(rng, 6400)
    big_null = ce.null_ece(big, np.random.default_rng(3), draws=50)
    assert 2.5 < null.mean() / big_null.mean() < 5.5  # sqrt(16) = 4


def test_overconfident_model_is_outside_the_floor(ce) -> None:
    """The same labels scored with sharpened probabilities (T = 0.4): its ECE leaves the null."""
    rng = np.random.default_rng(4)
    p = _probs(rng, 2000)
    y = (rng.random(2000)[:, None] > np.cumsum(p, 1)).sum(1)
    sharp = p**2.5 / (p**2.5).sum(1, keepdims=True)
    null = ce.null_ece(sharp, np.random.default_rng(5), draws=100)
    assert ece(sharp, y) > np.quantile(null, 0.95) + 0.03


def test_evaluate_on_the_default_model(ce, tmp_path) -> None:
    """A real run on the embedded default (few frames): every set scored, the files written."""
    import sdk

    doc = ce.evaluate(Path(sdk.default_model()), n=12, ood_n=3)
    assert set(doc["sets"]) == {"fresh scanner"} | {f"OOD {name}" for name, _ in ce._splits()}
    for r in doc["sets"].values():
        assert 0.0 <= r["ece"] <= 1.0 and 0.0 <= r["null_mean"] <= r["null_p95"] <= 1.0
    assert doc["temperature"] > 0
    md = ce.markdown(doc, "cmd")
    assert md.count("\n| ") == len(doc["sets"]) + 1 and "cmd" in md
    json.dumps(doc)


def test_region_temperature_is_fitted_and_recorded(ce) -> None:
    import sdk

    doc = ce.evaluate(Path(sdk.default_model()), n=3, ood_n=1, fit_region="ood-train", n_fit=6)
    assert doc["temperature_source"] == "ood-train" and 0.05 <= doc["temperature"] <= 20
    assert "ood-train" in ce.markdown(doc, "cmd")

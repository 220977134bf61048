"""Bad input to the clinical report (issue: one class, constant or NaN predictions, no predict_proba, tiny subgroups).

Each case goes through the same library calls the report template makes, inside `reports.section`, and
must end with a stated reason for the section that cannot be computed, never an exception or a blank.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.svm import LinearSVC

from medwb.evaluation import clinical as C
from medwb import reports as R
from medwb.explain.tabular import explanations
from medwb.core.settings import MedwbError
from medwb.data.dataset import Dataset
from medwb.datasets.builtin import load_dataset
from medwb.evaluation.metrics import evaluate_model
from medwb.evaluation.uncertainty import confidence_intervals, delong_test


class NaNModel(ClassifierMixin, BaseEstimator):
    "A classifier whose probabilities are all NaN."
    def fit(self, X, y): self.classes_ = np.array([0, 1]); return self
    def predict_proba(self, X): return np.full((len(X), 2), np.nan)


class ConstantModel(ClassifierMixin, BaseEstimator):
    "A classifier that gives every patient the same probability."
    def fit(self, X, y): self.classes_ = np.array([0, 1]); return self
    def predict_proba(self, X): return np.tile([0.6, 0.4], (len(X), 1))


@pytest.fixture(scope="module")
def bc():
    return load_dataset("breast_cancer")


def run_sections(ev, ds) -> dict:
    "The computed sections of the template, each in its guard; returns the record."
    record = {"evaluation": {"min_subgroup_n": 30}}
    y, s = ev.predictions["y_true"].to_numpy(), ev.predictions["score"].to_numpy()
    with R.section("confidence intervals", record):
        R.require("error" not in ev.metrics, ev.metrics.get("error", ""))
        record["ci"] = confidence_intervals(y, s, ds.task, ev.predictions["threshold"].to_numpy(), n_boot=200)
    with R.section("discrimination", record):
        for fig in R.classification_figures(ev, positive="malignant").values(): pass
    with R.section("calibration", record):
        R.require(ev.score_kind == "probability", "the model gives no probabilities")
        record["calibration"] = C.calibration_stats(y, s)
    with R.section("clinical utility", record):
        R.require(ev.score_kind == "probability", "the model gives no probabilities")
        record["decision_curve"] = C.decision_curve(y, s)
    with R.section("explanations", record):
        R.require(ev.score_kind != "decision", "no probabilities to explain")
        R.require(not np.isnan(s).any(), "predictions are NaN: nothing to explain")
        record["explanations"] = explanations(ev, ds, 0, max_rows=20, lime_samples=200)["summary"]
    with R.section("failure analysis", record):
        R.require(not np.isnan(s).any(), "predictions are NaN")
        record["worst_errors"] = C.worst_errors(ds, ev.predictions, ds.feature_names[:2])
    return record


def test_nan_probabilities_give_reasons_not_a_crash(bc):
    ev = evaluate_model(bc, NaNModel(), seed=0)
    rec = run_sections(ev, bc)
    un = rec["unavailable"]
    assert set(un) == {"confidence intervals", "discrimination", "calibration", "clinical utility", "explanations", "failure analysis"}
    assert all("NaN" in v for v in un.values()), un


def test_constant_predictions(bc):
    ev = evaluate_model(bc, ConstantModel(), seed=0)
    rec = run_sections(ev, bc)
    assert rec["ci"]["roc_auc"]["estimate"] == 0.5
    assert rec["calibration"]["slope"] is None and rec["calibration"]["reason"] == "constant predictions: no slope"
    assert "unavailable" not in rec or set(rec["unavailable"]) <= {"explanations"}
    y = ev.predictions["y_true"].to_numpy()
    d = delong_test(y, ev.predictions["score"].to_numpy(), ev.predictions["score"].to_numpy())
    assert d["p_value"] is None and d["reason"]


def test_a_model_without_predict_proba(bc):
    ev = evaluate_model(bc, LinearSVC(random_state=0), seed=0)
    assert ev.score_kind == "decision" and ev.metrics["roc_auc"] > 0.95 and ev.metrics["brier"] is None
    rec = run_sections(ev, bc)
    assert set(rec["unavailable"]) == {"calibration", "clinical utility", "explanations"}
    assert "no probabilities" in rec["unavailable"]["calibration"]
    assert rec["ci"]["sensitivity"]["estimate"] is not None
    cmp = C.compare(ev.predictions, evaluate_model(bc, "dummy", seed=0).predictions, "classification", n_boot=200)
    assert cmp["differences"]["brier"]["difference"] is None and cmp["differences"]["roc_auc"]["lo"] > 0.3
    assert cmp["delong"]["p_value"] < 1e-3        # rank-based: decision scores are fine


def test_a_test_split_with_one_class(bc):
    ev = evaluate_model(bc, "linear", seed=0)
    one = ev.predictions[ev.predictions["y_true"] == 0].reset_index(drop=True)
    ev.predictions = one
    rec = run_sections(ev, bc)
    assert rec["ci"]["roc_auc"]["estimate"] is None and "one class" in rec["ci"]["roc_auc"]["reason"]
    assert rec["ci"]["specificity"]["estimate"] is not None            # what can be computed still is
    assert "only one class" in rec["unavailable"]["discrimination"]
    assert rec["calibration"]["slope"] is None and "one class" in rec["calibration"]["reason"]


def test_a_subgroup_of_two_patients():
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame({"rid": [f"r{i}" for i in range(n)], "age": rng.integers(20, 80, n), "sex": ["F"] * (n - 2) + ["M", "M"],
                          "x": rng.normal(size=n)})
    frame["y"] = (frame["x"] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    frame.loc[frame.index[-2:], "y"] = [1, 0]
    ds = Dataset("toy", frame, "y", "classification", positive_class="event", id_column="rid")
    pred = pd.DataFrame({"record_id": frame["rid"], "part": "test", "y_true": frame["y"], "score": 1 / (1 + np.exp(-frame["x"])), "threshold": 0.5})
    sg = C.subgroup_table(ds, pred, min_n=30, n_boot=200).set_index(["variable", "group"])
    m = sg.loc[("sex", "sex=M")]
    assert m["n"] == 2 and "too small" in m["warning"]
    assert sg.loc[("sex", "sex=F"), "warning"] == ""


def test_nan_scores_are_refused_by_the_interval_functions():
    with pytest.raises(MedwbError, match="NaN"):
        confidence_intervals([0, 1, 1], [0.1, np.nan, 0.8], "classification")

"Hyper-parameter search (clause 5.2.3.2): nested CV shows the optimism of a tuned score on data with no signal, a seed fixes the trial table, bad spaces are refused."
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medwb.core.settings import MedwbError
from medwb.datasets.builtin import load_dataset
from medwb.models.search import holdout_search, nested_search, run_search, search_space


@pytest.fixture(scope="module")
def bc():
    return load_dataset("breast_cancer")


def permuted(ds, seed: int):
    y = np.random.default_rng(seed).permutation(ds.frame[ds.target].to_numpy())
    return dataclasses.replace(ds, frame=ds.frame.assign(**{ds.target: y}))


def test_nested_search_on_permuted_labels_scores_chance_while_the_inner_best_is_higher(bc):
    # labels permuted: nothing to learn. Six permutations, each a nested search (5 outer folds, 15 TPE trials, 3 inner folds)
    space = search_space("linear", "classification", {"C": "float(0.0001, 10, log)", "n_trials": "15"})
    runs = [nested_search(permuted(bc, s), space, seed=0, outer_folds=5, n_boot=200) for s in range(10, 16)]
    inner = np.array([r.inner_best for r in runs])
    outer = np.array([r.outer["estimate"] for r in runs])
    # measured: outer 0.446-0.531 (mean 0.499), inner best 0.503-0.547 (mean 0.531)
    assert abs(outer.mean() - 0.5) < 0.05, outer
    assert (inner > outer).sum() >= 5 and inner.mean() - outer.mean() > 0.015, (inner, outer)
    for r in runs:   # the optimism the report shows is the inner best minus the outer score, with the outer score's CI
        assert r.optimism["lo"] <= r.optimism["estimate"] <= r.optimism["hi"]
        assert r.optimism["estimate"] == pytest.approx(r.inner_best - r.outer["estimate"])


def test_search_on_real_signal_is_reproducible_and_every_record_is_scored_once(bc):
    space = search_space("random_forest", "classification",
                         {"n_estimators": "int(10, 60, log)", "max_depth": "int(2, 8)", "max_features": "float(0.2, 1.0)", "n_trials": "6"})
    a = nested_search(bc, space, seed=3, outer_folds=3, n_boot=200)
    b = nested_search(bc, space, seed=3, outer_folds=3, n_boot=200)
    assert a.folds["trials_hash"].tolist() == b.folds["trials_hash"].tolist()
    assert a.folds.equals(b.folds) and a.predictions.equals(b.predictions)
    assert sorted(a.predictions["record_id"]) == sorted(bc.ids)
    assert a.outer["estimate"] > 0.95 and abs(a.optimism["estimate"]) < 0.05
    st = a.stability()
    assert set(st.index) == {"n_estimators", "max_depth", "max_features"} and st.loc["max_depth", "per fold"].count(",") == 2
    h = holdout_search(bc, space, seed=3, n_boot=200)
    assert h.design == "holdout" and len(h.folds) == 1 and h.outer["estimate"] > 0.95


def test_regression_search_scores_r2_and_random_and_grid_samplers_run():
    db = load_dataset("diabetes")
    rows = np.arange(len(db.frame))
    r = run_search(db, search_space("random_forest", "regression", {"max_depth": "int(2, 6)", "n_estimators": "int(10, 30)",
                                                                     "sampler": "random", "n_trials": "4"}), rows)
    assert r.metric == "r2" and 0.2 < r.best_value < 0.7 and len(r.trials) == 4
    g = run_search(db, search_space("random_forest", "regression", {"max_depth": "choice(2, 4)", "n_estimators": "int(10, 20)",
                                                                     "sampler": "grid", "grid_points": "2", "n_trials": "50"}), rows)
    assert len(g.trials) == 4 and sorted(map(tuple, g.trials[["max_depth", "n_estimators"]].to_numpy().tolist())) == [(2, 10), (2, 20), (4, 10), (4, 20)]


@pytest.mark.parametrize("raw, msg", [
    ({"n_trees": "int(1, 5)"}, "has no parameter(s) n_trees"),
    ({"max_depth": "int(8, 2)"}, "empty or inverted"),
    ({"max_depth": "int(2, 2)"}, "empty or inverted"),
    ({"max_features": "float(0, 1, log)"}, "log range must be above 0"),
    ({"max_depth": "int(0, 4)"}, "does not take max_depth = 0"),
    ({"max_depth": "int(2, 4)", "n_trials": "0"}, "n_trials = '0': must be a positive integer"),
    ({"max_depth": "int(2, 4)", "inner_folds": "1"}, "at least 2 folds"),
    ({"max_depth": "normal(4, 1)"}, "write int(lo, hi[, log])"),
])
def test_bad_search_spaces_are_refused_before_anything_runs(raw, msg):
    with pytest.raises(MedwbError, match=None) as e: search_space("random_forest", "classification", raw)
    assert msg in str(e.value), str(e.value)


def test_a_class_smaller_than_the_inner_folds_is_named_with_its_count(bc):
    rows = np.r_[np.flatnonzero(bc.y == 0)[:40], np.flatnonzero(bc.y == 1)[:2]]
    space = search_space("linear", "classification", {"C": "float(0.01, 1)", "n_trials": "2"})
    with pytest.raises(MedwbError, match=r"class 1 \(malignant\) has 2 member\(s\).*fewer than the 3 inner folds"): run_search(bc, space, rows)


# --- the search in a run: the report's section, metrics.json and the compliance row; a bad space stops the run before any job

from conftest import medwb, write_settings  # noqa: E402


def test_a_run_with_a_declared_search_reports_trials_optimism_and_the_compliance_row(tmp_path):
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "datasets": "breast_cancer, diabetes", "models": "linear",
                                  "n_boot": "100"},
                       {"search.linear": {"C": "float(0.001, 100, log)", "n_trials": "5"}})
    r = medwb("run", settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    import json
    (bc,) = (tmp_path / "reports" / "breast_cancer" / "linear").glob("*/metrics.json")
    m = json.loads(bc.read_text())
    sr = m["search"]
    assert sr["design"] == "holdout" and sr["space"]["params"] == {"C": "float(0.001, 100, log)"} and 1e-3 <= sr["chosen"]["C"] <= 100
    # hold-out: the tuned model scored on the unseen test rows is the report's own model (sections 6-12)
    assert sr["outer"]["estimate"] == pytest.approx(m["metrics"]["roc_auc"])
    assert sr["optimism"]["lo"] <= sr["optimism"]["estimate"] <= sr["optimism"]["hi"]
    row = next(c for c in m["compliance"] if c["clause"] == "5.2.3.2")
    assert row["status"] == "met" and "optimism" in row["evidence"]
    html = (bc.parent / "report.html").read_text()
    assert "Hyper-parameter search" in html and "Optimism of the tuned score" in html and "Trial table" in html
    assert (bc.parent / "figures" / "search_curve.png").exists()
    # the least-squares variant has no C: the diabetes report says no search was declared, and its row stays "not yet"
    (db,) = (tmp_path / "reports" / "diabetes" / "linear").glob("*/metrics.json")
    md = json.loads(db.read_text())
    assert "search" not in md and "hyper-parameter search" in md["not_applicable"]
    assert next(c for c in md["compliance"] if c["clause"] == "5.2.3.2")["status"] == "not yet"
    # the same seed gives the same trials: reproducing the searched version gives metrics.json exactly
    r = medwb("reproduce", bc.parent.name[:8], settings=s)
    assert r.returncode == 0 and "identical: metrics.json reproduced exactly" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("section, msg", [
    ({"n_trials": "0", "C": "float(0.1, 1)"}, "must be a positive integer"),
    ({"C": "float(1, 0.1)"}, "empty or inverted"),
    ({"gamma": "float(0.1, 1)"}, "no variant of linear has parameter(s) gamma"),
])
def test_a_bad_search_section_stops_the_run_before_any_job(tmp_path, section, msg):
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "datasets": "breast_cancer", "models": "linear"},
                       {"search.linear": section})
    r = medwb("run", settings=s)
    assert r.returncode != 0 and msg in r.stderr, r.stderr
    assert not (tmp_path / "reports" / "breast_cancer").exists()


def test_a_kfold_run_nests_the_search_in_every_fold_and_says_its_metrics_are_optimistic(tmp_path):
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "datasets": "breast_cancer", "models": "random_forest",
                                  "evaluation": "kfold", "folds": "3", "n_boot": "100"},
                       {"model.random_forest": {"n_estimators": "30"},
                        "search.random_forest": {"max_depth": "int(2, 8)", "max_features": "float(0.2, 1.0)", "n_trials": "4"}})
    r = medwb("run", settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    import json
    (mf,) = (tmp_path / "reports" / "breast_cancer" / "random_forest").glob("*/metrics.json")
    sr = json.loads(mf.read_text())["search"]
    assert sr["design"] == "nested" and [f["fold"] for f in sr["folds"]] == ["fold1", "fold2", "fold3"]
    assert all(2 <= f["max_depth"] <= 8 and f["trials"] == 4 for f in sr["folds"]) and 2 <= sr["chosen"]["max_depth"] <= 8
    assert sr["outer"]["estimate"] > 0.9 and sr["optimism"]["lo"] <= sr["optimism"]["estimate"] <= sr["optimism"]["hi"]
    html = (mf.parent / "report.html").read_text()
    assert "(<strong>nested</strong>)" in html and "are optimistic by about the optimism below" in html
    assert "Stability of the chosen parameters across outer folds" in html


"End to end through the `medwb` command: run, cache, new versions, verify, reproduce, failed records, bad input."
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import medwb, write_settings
from medwb.core.store import file_hashes
from medwb.reports.html import assert_offline

SMALL = {"datasets": "breast_cancer, diabetes", "models": "dummy, linear", "seeds": "0", "jobs": "2", "executor": "process", "n_boot": "200"}


def published(reports: Path) -> dict[str, dict]:
    "version folder → file hashes of every published version under `reports`."
    return {str(m.parent.relative_to(reports)): file_hashes(m.parent) for m in sorted(reports.glob("*/*/*/manifest.json"))
            if "_failed" not in m.parts}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    s = write_settings(d, {**SMALL, "reports_dir": str(d / "reports")})
    r = medwb("run", settings=s)
    return d, s, r


def test_first_run_publishes_every_job(first_run):
    d, s, r = first_run
    assert r.returncode == 0, r.stdout + r.stderr
    assert "6 executed, 0 cached, 0 failed" in r.stdout   # a data report per dataset, then 2 models x 2 datasets
    assert f"index: {d / 'reports' / 'index.html'}" in r.stdout
    assert "[6/6]" in r.stdout                      # a progress line per finished job
    assert r.stdout.index("breast_cancer/data/") < r.stdout.index("breast_cancer/linear/")   # data reports come first
    vs = published(d / "reports")
    assert len(vs) == 6
    for k, files in vs.items():
        want = {"qc_issues.csv", "corrections.csv"} if "/data/" in k else {"model.joblib", "predictions.csv"}
        assert {"report.html", "report.ipynb", "metrics.json", *want} <= set(files), k
        assert any(f.startswith("figures/") for f in files)
    index = (d / "reports" / "index.html").read_text()
    assert index.count('report.html">report</a>') == 6


def test_reports_are_self_contained_and_hide_code(first_run):
    d, _, _ = first_run
    html = next((d / "reports" / "breast_cancer" / "linear").glob("*/report.html")).read_text()
    assert "Positive class: malignant" in html and "scikit-learn codes malignant as 0" in html
    assert "data:image/png;base64," in html
    assert_offline(html)                            # nothing fetched from the network
    assert "<script" not in html
    assert "TabularReport.start(" not in html       # code is hidden; the executed notebook keeps it
    nb = next((d / "reports" / "breast_cancer" / "linear").glob("*/report.ipynb")).read_text()
    assert "TabularReport.start(" in nb


def test_metrics_match_reference_figures(first_run):
    d, _, _ = first_run
    bc = json.loads(next((d / "reports" / "breast_cancer" / "linear").glob("*/metrics.json")).read_text())
    dia = json.loads(next((d / "reports" / "diabetes" / "linear").glob("*/metrics.json")).read_text())
    dummy = json.loads(next((d / "reports" / "breast_cancer" / "dummy").glob("*/metrics.json")).read_text())
    assert bc["metrics"]["roc_auc"] > 0.97 and bc["positive_class"] == "malignant"
    assert 0.4 < dia["metrics"]["r2"] < 0.6
    assert dummy["metrics"]["roc_auc"] == 0.5


def test_second_run_is_all_cached(first_run):
    d, s, _ = first_run
    before = published(d / "reports")
    t0 = time.perf_counter(); r = medwb("run", settings=s); took = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert "0 executed, 6 cached, 0 failed" in r.stdout and "every job was cached" in r.stdout
    print(f"cached re-run: {took:.1f} s")   # measured, not asserted: a 26-job cached run took 15.9 s on a slow 2-core machine
    assert published(d / "reports") == before


def test_changed_parameter_makes_new_versions_and_keeps_old(first_run, tmp_path):
    d, _, _ = first_run
    reports = tmp_path / "reports"; shutil.copytree(d / "reports", reports)
    before = published(reports)
    s = write_settings(tmp_path, {**SMALL, "reports_dir": str(reports)}, {"model.linear": {"fit_intercept": "False"}})
    r = medwb("run", settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 executed, 4 cached, 0 failed" in r.stdout
    after = published(reports)
    assert {k: v for k, v in after.items() if k in before} == before      # old versions untouched
    new = sorted(set(after) - set(before))
    assert [Path(k).parent.name for k in new] == ["linear", "linear"]    # exactly the changed model's jobs
    for k in new:
        man = json.loads((reports / k / "manifest.json").read_text())
        old = [p for p in before if p.startswith(f"{man['dataset']}/linear/")]
        assert man["parent"] == Path(old[0]).name and man["params"] == {"fit_intercept": False}


def test_verify_passes_then_names_a_changed_file(first_run, tmp_path):
    d, _, _ = first_run
    reports = tmp_path / "reports"; shutil.copytree(d / "reports", reports)
    s = write_settings(tmp_path, {**SMALL, "reports_dir": str(reports)})
    r = medwb("verify", settings=s)
    assert r.returncode == 0 and "6 of 6 version(s) intact" in r.stdout
    target = next((reports / "diabetes" / "linear").glob("*/report.html"))
    b = bytearray(target.read_bytes()); b[100] ^= 1; target.write_bytes(bytes(b))
    r = medwb("verify", settings=s)
    assert r.returncode == 1
    assert "changed: report.html" in r.stdout and str(target) in r.stdout
    assert "5 of 6 version(s) intact" in r.stdout
    (target.parent / "figures" / "prediction_error.png").unlink()
    r = medwb("verify", target.parent.name, settings=s)
    assert r.returncode == 1 and "missing: figures/prediction_error.png" in r.stdout


def test_model_reports_link_to_their_data_report(first_run):
    d, _, _ = first_run
    for ds in ("breast_cancer", "diabetes"):
        data_v = next((d / "reports" / ds / "data").glob("*/manifest.json")).parent
        for m in ("dummy", "linear"):
            v = next((d / "reports" / ds / m).glob("*/manifest.json")).parent
            link = json.loads((v / "manifest.json").read_text())["data_report"]
            assert link["version_id"] == data_v.name and (v / link["path"]).resolve() == (data_v / "report.html").resolve()
            assert f'href="{link["path"]}"' in (v / "report.html").read_text()
    dm = json.loads((data_v / "metrics.json").read_text())
    assert dm["metrics"]["rows_in"] == dm["metrics"]["rows_out"] == 442 and dm["metrics"]["qc_issues"] == 0


def test_reproduce_gives_identical_metrics(first_run):
    d, s, _ = first_run
    vid = next((d / "reports" / "breast_cancer" / "linear").glob("*/manifest.json")).parent.name
    r = medwb("reproduce", vid[:8], settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical: metrics.json reproduced exactly" in r.stdout


def test_list_and_show(first_run):
    d, s, _ = first_run
    r = medwb("list", settings=s)
    assert r.returncode == 0 and r.stdout.count(" ok ") >= 6
    vid = next((d / "reports" / "diabetes" / "dummy").glob("*/manifest.json")).parent.name
    r = medwb("show", vid, settings=s)
    assert r.returncode == 0 and vid in r.stdout and '"r2"' in r.stdout and "dataset_fingerprint" in r.stdout


def test_failing_notebook_leaves_a_failed_record_and_others_finish(first_run, tmp_path):
    d, _, _ = first_run
    reports = tmp_path / "reports"; shutil.copytree(d / "reports", reports)
    before = published(reports)
    s = write_settings(tmp_path, {**SMALL, "datasets": "breast_cancer", "models": "dummy, linear, svm", "reports_dir": str(reports)},
                       {"model.svm": {"C": "-1.0"}})
    r = medwb("run", settings=s)
    assert r.returncode == 1
    assert "0 executed, 3 cached, 1 failed" in r.stdout        # svm failed; the data report, dummy and linear still answered
    assert "InvalidParameterError" in r.stdout and "'C' parameter" in r.stdout
    failed = list((reports / "breast_cancer" / "svm" / "_failed").glob("*/failed.json"))
    assert len(failed) == 1
    info = json.loads(failed[0].read_text())
    assert info["status"] == "failed" and "C" in info["error"]
    assert (failed[0].parent / "report.ipynb").exists()              # executed up to the failing cell
    assert not list((reports / "breast_cancer" / "svm").glob("*/manifest.json"))   # nothing looks finished
    assert published(reports) == before
    index = (reports / "index.html").read_text()
    assert ">failed<" in index and "_failed/" in index


def _bad_csv(folder: Path) -> dict:
    pd.DataFrame({"age": [50, 60, 70], "sex": [1, 2, 1]}).to_csv(folder / "cohort.csv", index=False)
    return {"dataset.cohort": {"path": "cohort.csv", "target": "outcome", "task": "classification"}}


@pytest.mark.parametrize("case, medwb_keys, sections, args, message", [
    ("unknown dataset", {"datasets": "mimic"}, {}, [], "unknown dataset 'mimic'"),
    ("unknown model", {"models": "dummy, xgboost"}, {}, [], "unknown model 'xgboost'"),
    ("unknown parameter", {}, {"model.svm": {"depth": "3"}}, [], "[model.svm]: unknown parameter(s) depth"),
    ("missing key", {"models": None}, {}, [], "missing key(s): models"),
    ("malformed key", {"seeds": "zero"}, {}, [], "seeds must be integers"),
    ("malformed literal", {}, {"model.svm": {"C": "very high"}}, [], "is not a Python literal"),
    ("unwritable reports folder", {}, {}, ["--reports-dir", "/etc/hostname/reports"], "is not writable"),
    ("dataset without target column", {"datasets": "cohort"}, "csv", [], "has no target column 'outcome'"),
])
def test_bad_input_is_refused_and_changes_nothing(first_run, tmp_path, case, medwb_keys, sections, args, message):
    d, _, _ = first_run
    reports = tmp_path / "reports"; shutil.copytree(d / "reports", reports)
    before = published(reports)
    keys = {**SMALL, "reports_dir": str(reports), **medwb_keys}
    secs = _bad_csv(tmp_path) if sections == "csv" else sections
    s = write_settings(tmp_path, {k: v for k, v in keys.items() if v is not None}, secs)
    if medwb_keys.get("models", "") is None:
        text = s.read_text().splitlines(); s.write_text("\n".join(l for l in text if not l.startswith("models")))
    r = medwb(*args, "run", settings=s) if args else medwb("run", settings=s)
    assert r.returncode == 2, (case, r.returncode, r.stdout, r.stderr)
    assert message in r.stderr, (case, r.stderr)
    assert "Traceback" not in r.stderr
    assert published(reports) == before


def test_unknown_version_is_a_clear_error(first_run):
    _, s, _ = first_run
    r = medwb("show", "ffffffffff", settings=s)
    assert r.returncode == 2 and "no published version 'ffffffffff'" in r.stderr

"The reviewer's workbench through the `medwb` command: compare, hashed splits, reproduction across platforms, gc, list filters."
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import medwb, write_settings
from medwb.core.store import STAGING_DIR, compare_page, verify_manifest
from medwb.reports.html import assert_offline

SMALL = {"datasets": "breast_cancer", "models": "dummy, random_forest, mlp", "seeds": "0", "jobs": "2", "executor": "process", "n_boot": "200"}
RF = {"n_estimators": "60", "min_samples_leaf": "2"}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    "The small matrix, then the same with one random-forest parameter changed: a parent and a child version."
    d = tmp_path_factory.mktemp("wb")
    s = write_settings(d, {**SMALL, "reports_dir": str(d / "reports")}, {"model.random_forest": RF})
    r1 = medwb("run", settings=s)
    s2 = write_settings(d, {**SMALL, "reports_dir": str(d / "reports")}, {"model.random_forest": {**RF, "n_estimators": "120"}})
    r2 = medwb("run", settings=s2)
    return d, s2, r1, r2


def _versions(reports: Path, model: str) -> list[dict]:
    ms = [json.loads(p.read_text()) for p in (reports / "breast_cancer" / model).glob("*/manifest.json")]
    return sorted(ms, key=lambda m: m["created"])


def test_second_run_compares_the_child_with_its_parent(two_runs):
    d, s, r1, r2 = two_runs
    assert r1.returncode == 0 and r2.returncode == 0, r1.stdout + r1.stderr + r2.stdout + r2.stderr
    assert "1 executed, 3 cached, 0 failed" in r2.stdout
    old, new = _versions(d / "reports", "random_forest")
    assert new["parent"] == old["version_id"]
    page = compare_page(d / "reports", new["version_id"], old["version_id"])
    assert page.exists() and f"compared breast_cancer/random_forest/seed0 {new['version_id']}" in r2.stdout
    html = page.read_text()
    assert_offline(html)
    assert "n_estimators" in html and "data:image/png;base64," in html        # the changed parameter, the overlaid curves


def test_compare_parent_shows_changed_parameter_and_paired_ci(two_runs):
    d, s, _, _ = two_runs
    old, new = _versions(d / "reports", "random_forest")
    r = medwb("compare", "--parent", new["version_id"][:8], settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "params.n_estimators: 60 → 120" in r.stdout
    assert "paired" in r.stdout and "DeLong" in r.stdout
    assert "shared" in r.stdout and "verdict" in r.stdout
    j = json.loads(medwb("compare", new["version_id"], old["version_id"], "--json", settings=s).stdout)
    n_test = json.loads((d / "reports" / "breast_cancer" / "random_forest" / new["version_id"] / "metrics.json").read_text())["metrics"]["n"]
    assert j["records"]["shared"] == n_test                                # the same split: every test record paired
    lo, hi = j["paired"]["roc_auc"]["lo"], j["paired"]["roc_auc"]["hi"]
    assert lo <= j["paired"]["roc_auc"]["difference"] <= hi


def test_compare_bad_input_names_the_version_or_file(two_runs, tmp_path):
    d, s, _, _ = two_runs
    old, new = _versions(d / "reports", "random_forest")
    r = medwb("compare", "ffffffff", old["version_id"], settings=s)
    assert r.returncode == 2 and "no published version 'ffffffff'" in r.stderr
    r = medwb("compare", "--parent", old["version_id"], settings=s)
    assert r.returncode == 2 and "has no parent" in r.stderr
    reports = tmp_path / "reports"; shutil.copytree(d / "reports", reports)
    s2 = write_settings(tmp_path, {**SMALL, "reports_dir": str(reports)})
    pred = reports / "breast_cancer" / "random_forest" / new["version_id"] / "predictions.csv"
    pred.write_text(pred.read_text().replace("test", "tset", 1))
    r = medwb("compare", new["version_id"], old["version_id"], settings=s2)
    assert r.returncode == 2 and "predictions.csv" in r.stderr and new["version_id"] in r.stderr


def test_settings_and_reports_dir_after_the_subcommand(two_runs):
    d, s, _, _ = two_runs
    r = medwb("list", "--settings", str(s), "--reports-dir", str(d / "reports"))
    assert r.returncode == 0 and "random_forest" in r.stdout
    r = medwb("list", "--model", "random_forest", "--settings", str(s))
    rows = [l for l in r.stdout.splitlines()[2:] if l.strip()]
    assert len(rows) == 2 and all("random_forest" in l for l in rows)
    r = medwb("list", "--status", "failed", "--settings", str(s))
    assert "match the filters" in r.stdout


def test_list_shows_stale_versions_as_stale(two_runs, tmp_path):
    from medwb.core.store import mark_stale
    d, _, _, _ = two_runs
    reports = tmp_path / "reports"; shutil.copytree(d / "reports", reports)
    s = write_settings(tmp_path, {**SMALL, "reports_dir": str(reports)})
    mark_stale(reports, "breast_cancer", ["S1"], ["wdbc-0001"])
    r = medwb("list", "--status", "stale", settings=s)
    rows = [l for l in r.stdout.splitlines()[2:] if l.strip()]
    assert len(rows) == 5 and all(" stale " in l for l in rows), r.stdout   # data report, 3 models, the rf child


def test_gc_dry_run_then_apply_keeps_published_versions(two_runs, tmp_path):
    d, _, _, _ = two_runs
    reports = tmp_path / "reports"; shutil.copytree(d / "reports", reports)
    s = write_settings(tmp_path, {**SMALL, "reports_dir": str(reports)})
    dead = reports / STAGING_DIR / "0123456789abcdef-999999999-dead"; dead.mkdir(parents=True)
    (dead / "report.ipynb").write_text("{}")
    os.utime(dead / "report.ipynb", (0, 0)); os.utime(dead, (0, 0))
    r = medwb("gc", settings=s)
    assert r.returncode == 0 and "dry run: 1 item(s)" in r.stdout and dead.exists()
    r = medwb("gc", "--apply", settings=s)
    assert r.returncode == 0 and "removed 1 item(s)" in r.stdout and not dead.exists()
    assert "intact" in medwb("verify", settings=s).stdout
    assert all(not any(verify_manifest(m.parent)[k] for k in ("changed", "missing", "extra"))
               for m in reports.glob("*/*/*/manifest.json"))


def test_reproduce_on_a_simulated_other_platform(two_runs):
    "A processor without AVX-512, simulated: the platform differs, and with cpu_isa = avx2 the MLP's numbers do not."
    d, s, _, _ = two_runs
    mlp = _versions(d / "reports", "mlp")[0]
    assert mlp["platform"]["isa_limits"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and len(mlp["platform"]["id"]) == 16
    env = {**os.environ, "MEDWB_SIMULATE_ISA": "avx2"}
    import subprocess, sys
    r = subprocess.run([str(Path(sys.executable).parent / "medwb"), "--settings", str(s), "reproduce", mlp["version_id"]],
                       capture_output=True, text=True, env=env, timeout=600)
    assert "platform differs" in r.stdout, r.stdout + r.stderr
    assert r.returncode == 0 and ("identical all the same" in r.stdout or "every metric within its tolerance" in r.stdout), r.stdout
    same = medwb("reproduce", mlp["version_id"], settings=s)
    assert same.returncode == 0 and "identical" in same.stdout and "platform differs" not in same.stdout


def test_withdrawing_a_patient_moves_no_other_record():
    "The issue's case: 1 clinic patient of 472 withdrawn; every other record keeps its part, and the test sets pair."
    from medwb.data.dataset import Dataset
    from medwb.datasets.builtin import load_dataset
    from medwb.models.features import split_dataset, split_keys
    ds = load_dataset("clinic")
    sp = split_dataset(ds, seed=0)
    gone = split_keys(ds)[sp.test[0]]
    keep = split_keys(ds) != gone
    fewer = Dataset(ds.name, ds.frame[keep].reset_index(drop=True), ds.target, ds.task, ds.card,
                    id_column=ds.id_column, group_column=ds.group_column)
    sp2 = split_dataset(fewer, seed=0)
    part = lambda d, s: {d.ids[i]: n for n, ix in s.parts().items() for i in ix}
    before, after = part(ds, sp), part(fewer, sp2)
    assert all(before[k] == after[k] for k in after) and len(after) == len(before) - int((~keep).sum())
    assert len(np.intersect1d(ds.ids[sp.test], fewer.ids[sp2.test])) == len(sp.test) - int((~keep).sum())

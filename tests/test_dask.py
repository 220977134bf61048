"The --scheduler path: the same jobs on a Dask distributed cluster (a LocalCluster here)."
from __future__ import annotations

import json

import pytest

from conftest import medwb, write_settings
from medwb.core.settings import load_settings
from medwb.run.execute import run_matrix


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster
    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    yield c
    c.close()


def test_matrix_runs_on_a_dask_cluster(cluster, tmp_path):
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "datasets": "breast_cancer, diabetes",
                                  "models": "dummy", "seeds": "0, 1", "n_boot": "200"})
    settings = load_settings(s, executor="dask", scheduler=cluster.scheduler_address)
    res = run_matrix(settings, progress=None)
    assert sorted(r["status"] for r in res) == ["ok"] * 6      # 2 data reports + 2 datasets x 2 seeds
    assert len(list((tmp_path / "reports").glob("*/dummy/*/manifest.json"))) == 4
    # the same matrix again through the CLI flag: every job is a cache hit
    r = medwb("run", "--scheduler", cluster.scheduler_address, settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "executor=dask" in r.stdout and "0 executed, 6 cached" in r.stdout


def test_dask_results_equal_process_pool_results(cluster, tmp_path):
    a = write_settings(tmp_path, {"reports_dir": str(tmp_path / "a"), "datasets": "breast_cancer", "models": "linear", "n_boot": "200"})
    run_matrix(load_settings(a, executor="dask", scheduler=cluster.scheduler_address), progress=None)
    run_matrix(load_settings(a, reports_dir=str(tmp_path / "b"), executor="process", jobs=1), progress=None)
    ma = json.loads(next((tmp_path / "a").glob("*/*/*/metrics.json")).read_text())
    mb = json.loads(next((tmp_path / "b").glob("*/*/*/metrics.json")).read_text())
    assert ma == mb

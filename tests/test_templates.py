"papermill runs of the report template with small parameters, as the pipeline runs it."
from __future__ import annotations

import json

import pytest

from conftest import ROOT, write_settings
from medwb.core import load_settings
from medwb.pipeline import build_matrix, execute_report, template_hash
from medwb.reports import assert_offline


@pytest.mark.parametrize("dataset, model, evaluation, params", [
    ("breast_cancer", "mlp", "kfold", {"epochs": 5, "hidden": [8]}),
    ("diabetes", "mlp", "holdout", {"epochs": 5}),
    ("diabetes", "gradient_boosting", "kfold", {"n_estimators": 10}),
    ("breast_cancer", "random_forest", "holdout", {"n_estimators": 10}),
])
def test_template_runs_with_small_parameters(tmp_path, dataset, model, evaluation, params):
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "datasets": dataset, "models": model,
                                  "evaluation": evaluation, "folds": 3}, {f"model.{model}": params})
    [job] = build_matrix(load_settings(s))
    assert job.params == params and job.inputs["folds"] == (3 if evaluation == "kfold" else None)
    out = tmp_path / "out"
    m = execute_report(job, out, {"version_id": "test", "inputs": job.inputs})
    assert m["dataset"] == dataset and m["model"] == model and m["method"] == evaluation
    key = "roc_auc" if dataset == "breast_cancer" else "r2"
    assert m["metrics"][key] is not None
    if evaluation == "kfold": assert sorted(k for k in m["parts"] if k.startswith("fold")) == ["fold1", "fold2", "fold3"]
    html = (out / "report.html").read_text()
    assert_offline(html)
    assert "1. Identity and provenance" in html and "5. Performance" in html and "data:image/png" in html
    assert {p.name for p in (out / "figures").iterdir()}
    json.loads((out / "metrics.json").read_text())


def test_template_hash_ignores_outputs_but_not_code(tmp_path):
    import nbformat
    src = ROOT / "nbs" / "reports" / "tabular.ipynb"
    nb = nbformat.read(str(src), as_version=4)
    h = template_hash(src)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="noise")]
    nbformat.write(nb, str(tmp_path / "a.ipynb"))
    assert template_hash(tmp_path / "a.ipynb") == h
    nb.cells[1].source += "\n# changed"
    nbformat.write(nb, str(tmp_path / "b.ipynb"))
    assert template_hash(tmp_path / "b.ipynb") != h

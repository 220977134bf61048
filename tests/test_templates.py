"papermill runs of the report template with small parameters, as the pipeline runs it."
from __future__ import annotations

import json

import pytest

from conftest import ROOT, write_settings
from medwb.core import load_settings
from medwb.pipeline import build_matrix, execute_report, template_hash
from medwb.reports import assert_offline


SECTIONS = ["1. Identity and provenance", "2. Intended use", "3. Data", "4. Validation design", "5. Model specification",
            "6. Discrimination", "7. Threshold metrics", "8. Calibration", "9. Clinical utility", "10. Regression metrics",
            "11. Baseline comparison", "12. Subgroups", "13. Explanations", "14. Failure analysis",
            "15. Limitations and improvement plan", "16. Compliance matrix", "17. Reproducibility"]


@pytest.mark.parametrize("dataset, model, evaluation, params", [
    ("breast_cancer", "mlp", "kfold", {"epochs": 5, "hidden": [8]}),
    ("diabetes", "mlp", "holdout", {"epochs": 5}),
    ("diabetes", "gradient_boosting", "repeated_kfold", {"n_estimators": 10}),
    ("breast_cancer", "random_forest", "bootstrap", {"n_estimators": 10}),
])
def test_template_runs_with_small_parameters(tmp_path, dataset, model, evaluation, params):
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "datasets": dataset, "models": model,
                                  "evaluation": evaluation, "folds": 3, "repeats": 2, "rounds": 4, "n_boot": 200},
                       {f"model.{model}": params})
    [job] = build_matrix(load_settings(s))
    assert job.params == params and job.inputs["evaluation"]["folds"] == (3 if "kfold" in evaluation else None)
    out = tmp_path / "out"
    m = execute_report(job, out, {"version_id": "test", "inputs": job.inputs})
    assert m["dataset"] == dataset and m["model"] == model and m["method"] == evaluation
    key = "roc_auc" if dataset == "breast_cancer" else "r2"
    assert m["metrics"][key] is not None
    if evaluation == "kfold": assert sorted(k for k in m["parts"] if k.startswith("fold")) == ["fold1", "fold2", "fold3"]
    if evaluation == "repeated_kfold": assert len([k for k in m["parts"] if "fold" in k]) == 6
    if evaluation == "bootstrap": assert len([k for k in m["parts"] if k.startswith("round")]) == 4
    html = (out / "report.html").read_text()
    assert_offline(html)
    for title in SECTIONS: assert f">{title}<" in html, title
    assert "data:image/png" in html and "NOT FOR CLINICAL USE" in html
    assert m["ci"][key]["lo"] <= m["ci"][key]["estimate"] <= m["ci"][key]["hi"]
    assert "explanations" in m and m["explanations"]["top_features"], m.get("unavailable")
    assert len(m["limitations"]) >= 3 and len(m["compliance"]) >= 15
    expected_na = {"discrimination", "threshold metrics", "calibration", "clinical utility"} if key == "r2" else {"regression metrics", "subgroups"}
    assert set(m.get("not_applicable", {})) == expected_na, m.get("not_applicable")
    assert not m.get("unavailable"), m.get("unavailable")
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


def test_a_model_without_probabilities_still_gets_a_report(tmp_path):
    "SVC(probability=False) has no predict_proba: probability sections say why; the rest is produced."
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "datasets": "breast_cancer", "models": "svm",
                                  "n_boot": 200}, {"model.svm": {"probability": False}})
    [job] = build_matrix(load_settings(s))
    m = execute_report(job, tmp_path / "out", {"version_id": "test", "inputs": job.inputs})
    assert m["score_kind"] == "decision" and m["metrics"]["roc_auc"] > 0.95
    un = m["unavailable"]
    assert "no probabilities" in un["calibration"] and "no probabilities" in un["clinical utility"]
    assert "explanations" in un and "comparisons" in m and "ci" in m
    html = (tmp_path / "out" / "report.html").read_text()
    assert "This section could not be computed" in html and ">16. Compliance matrix<" in html

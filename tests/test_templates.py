"papermill runs of the report template with small parameters, as the pipeline runs it."
from __future__ import annotations

import json

import pytest

from conftest import ROBUSTNESS_SMALL, ROOT, write_settings
from medwb.core.settings import load_settings
from medwb.run.jobs import build_matrix, template_hash
from medwb.run.execute import execute_report
from medwb.reports.html import assert_offline


SECTIONS = ["1. Identity and provenance", "2. Intended use", "3. Data", "4. Validation design", "5. Model specification",
            "6. Discrimination", "7. Threshold metrics", "8. Calibration", "9. Clinical utility", "10. Regression metrics",
            "11. Baseline comparison", "12. Subgroups", "13. Explanations", "14. Failure analysis",
            "15. Robustness", "16. Distribution shift and out-of-distribution inputs", "17. Compressed variants",
            "18. Limitations and improvement plan", "19. Compliance matrix", "20. Reproducibility"]


@pytest.mark.parametrize("dataset, model, evaluation, params", [
    ("breast_cancer", "mlp", "kfold", {"epochs": 5, "hidden": [8]}),
    ("diabetes", "mlp", "holdout", {"epochs": 5}),
    ("diabetes", "gradient_boosting", "repeated_kfold", {"n_estimators": 10}),
    ("breast_cancer", "random_forest", "bootstrap", {"n_estimators": 10}),
])
def test_template_runs_with_small_parameters(tmp_path, dataset, model, evaluation, params):
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "datasets": dataset, "models": model,
                                  "evaluation": evaluation, "folds": 3, "repeats": 2, "rounds": 4, "n_boot": 200},
                       {f"model.{model}": params, "robustness": ROBUSTNESS_SMALL})
    [data_job, job] = build_matrix(load_settings(s))
    assert data_job.task == "data"
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
    expected_na = ({"discrimination", "threshold metrics", "calibration", "clinical utility", "robustness", "compressed variants"} if key == "r2"
                   else {"regression metrics", "subgroups"}) | {"hyper-parameter search"}   # no [search.MODEL] in these runs
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
                                  "n_boot": 200}, {"model.svm": {"probability": False}, "robustness": ROBUSTNESS_SMALL})
    [data_job, job] = build_matrix(load_settings(s))
    assert data_job.task == "data"
    m = execute_report(job, tmp_path / "out", {"version_id": "test", "inputs": job.inputs})
    assert m["score_kind"] == "decision" and m["metrics"]["roc_auc"] > 0.95
    un = m["unavailable"]
    assert "no probabilities" in un["calibration"] and "no probabilities" in un["clinical utility"]
    assert "explanations" in un and "comparisons" in m and "ci" in m
    html = (tmp_path / "out" / "report.html").read_text()
    assert "no probabilities" in un["robustness"] and "no probabilities" in un["compressed variants"]
    assert "This section could not be computed" in html and ">19. Compliance matrix<" in html


def test_data_report_of_a_declared_csv_with_bad_rows_and_gbk(tmp_path):
    "A GBK-encoded CSV with a malformed row and errors, declared with a schema: the data report counts and lists them."
    data = tmp_path / "data"; (data / "schemas").mkdir(parents=True)
    rows = ["住院号,患者,入院日期,年龄,血糖,单位,结局"]
    for i in range(60):
        rows.append(f"Z{i:03d},P{i:03d},2021-01-{1 + i % 28:02d},{30 + i % 50},{80 + i % 40},mg/dL,{'是' if i % 3 == 0 else '否'}")
    rows[5] = rows[5] + ",多余"                                   # malformed: an extra field (line 6)
    rows[8] = rows[8].replace(",mg/dL,", ",mmol/L,").replace(f",{80 + 7 % 40},", ",5.2,")
    rows[12] = rows[12].replace("2021-01-12", "2021年1月12日")        # a Chinese date
    (data / "ward.csv").write_bytes("\n".join(rows).encode("gb18030"))
    (data / "schemas" / "ward.yml").write_text(
        "name: ward\nid: 住院号\npatient: 患者\ntime: 入院日期\ncolumns:\n"
        "  住院号: {type: string, required: true, role: id}\n  患者: {type: string, required: true, role: patient}\n"
        "  入院日期: {type: date, required: true}\n  年龄: {type: number, plausible: [0, 120], unit: years}\n"
        "  血糖: {type: number, unit: mg/dL, range: [20, 800], unit_column: 单位, convert: {mmol/L: [18.016, 0]}}\n"
        "  单位: {type: string, role: meta}\n  结局: {type: category, allowed: [是, 否], required: true, role: target}\n",
        encoding="utf-8")
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "data_dir": str(data), "datasets": "ward",
                                  "models": "linear", "n_boot": 200},
                       {"dataset.ward": {"path": "ward.csv", "schema": "schemas/ward.yml", "target": "结局", "positive": "是"}})
    [data_job, job] = build_matrix(load_settings(s))
    m = execute_report(data_job, tmp_path / "data_out", {"version_id": "test", "inputs": data_job.inputs})
    assert m["ingest"]["encoding"] == "gb18030" and m["ingest"]["n_dropped"] == 1 and m["metrics"]["ingest_dropped"] == 1
    assert m["metrics"]["rows_in"] == 59 and m["metrics"]["qc_issues"] >= 1
    html = (tmp_path / "data_out" / "report.html").read_text(encoding="utf-8")
    assert "line 6" in html and "converted to the canonical unit" in html and "住院号" in html
    assert_offline(html)
    mm = execute_report(job, tmp_path / "model_out", {"version_id": "test", "inputs": job.inputs,
                                                      "data_report": {"version_id": "d1", "path": "../../data/d1/report.html"}})
    assert mm["metrics"]["roc_auc"] is not None and mm["data_report"]["version_id"] == "d1"
    assert "../../data/d1/report.html" in (tmp_path / "model_out" / "report.html").read_text(encoding="utf-8")


def test_data_report_of_the_clinic_dataset_shows_known_error_recall(tmp_path):
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "datasets": "clinic", "models": "dummy", "n_boot": 200,
                                  "data_dir": str(ROOT / "data")})   # the clinic table is read from the shipped data folder
    [data_job, _] = build_matrix(load_settings(s))
    m = execute_report(data_job, tmp_path / "out", {"version_id": "test", "inputs": data_job.inputs})
    assert m["qc_score"]["recall"] >= 0.95 and m["qc_score"]["false_alarm_rate"] <= 0.02
    assert m["metrics"]["qc_issues_after"] == 0 and m["annotation"]["fleiss_kappa"] > 0.6
    assert "unavailable" not in m, m.get("unavailable")
    corrections = (tmp_path / "out" / "corrections.csv").read_text(encoding="utf-8")
    assert corrections.startswith("record_id,row,column,old,new,rule")

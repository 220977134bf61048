"Robustness and compression in tabular reports (clauses 5.4.3, 5.2.4): a forest, a PGD-trained MLP, bad settings, a tampered artifact."
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROBUSTNESS_SMALL, write_settings
from medwb.core.settings import MedwbError, load_settings
from medwb.core.store import read_json, verify_manifest
from medwb.run.jobs import build_matrix
from medwb.run.execute import run_matrix


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("robust")
    s = write_settings(tmp, {"reports_dir": str(tmp / "reports"), "datasets": "breast_cancer", "models": "random_forest, mlp_at",
                             "n_boot": 200, "jobs": 2},
                       {"model.random_forest": {"n_estimators": 30}, "model.mlp_at": {"epochs": 30}, "robustness": ROBUSTNESS_SMALL})
    settings = load_settings(s)
    res = run_matrix(settings, progress=None)
    return settings, {r["model"]: r for r in res}


def _metrics(r) -> dict: return read_json(Path(r["path"]) / "metrics.json")


def test_forest_gets_query_and_transfer_attacks_and_says_why_not_white_box(run):
    _, res = run
    assert {k: r["status"] for k, r in res.items()} == {"data": "ok", "random_forest": "ok", "mlp_at": "ok"}
    m = _metrics(res["random_forest"])
    rob = m["robustness"]
    assert {g["attack"] for g in rob["grid"]} == {"hopskipjump", "transfer"}
    [why] = [w for a, w in rob["not_run"] if a.startswith("FGSM")]
    assert "no gradient" in why and "RandomForestClassifier" in why
    hsj = [g for g in rob["grid"] if g["attack"] == "hopskipjump"]
    assert all(g["queries"] > 0 and g["n"] == 8 for g in hsj)          # the declared budget: hsj_rows = 8 (conftest)
    assert len(rob["perturbable"]) == 30 and rob["rows"] == 40         # the schema's perturbable features, the declared subset
    checks = {c["check"]: c["passed"] for c in rob["sanity"]}
    assert checks["ε = 0 gives the clean ROC-AUC"] is True and checks["PGD at least as strong as FGSM"] is None
    variants = {v["variant"]: v for v in m["compression"]["variants"]}
    assert {"original", "onnx"} <= {k.split(" ")[0] for k in variants}
    onnx = next(v for k, v in variants.items() if k.startswith("onnx") and not v.get("error"))
    assert onnx["decisions_agree"] >= 0.99 and onnx["size_bytes"] > 0
    assert {c["kind"] for c in m["shift"]["curves"]} == {"noise", "missing", "unit_error"}
    comp = {c["clause"]: c["status"] for c in m["compliance"]}
    assert comp["5.4.3.1"] == "met" and comp["5.2.4.1–2"] == "partly"     # an ONNX export only: int8 and distillation are for networks
    html = (Path(res["random_forest"]["path"]) / "report.html").read_text(encoding="utf-8")
    for s in ("15. Robustness", "no gradient", "HopSkipJump", "Sanity checks", "17. Compressed variants", "skl2onnx"):
        assert s in html, s


def test_pgd_trained_mlp_is_shown_next_to_the_standard_one(run):
    _, res = run
    m = _metrics(res["mlp_at"])
    rob = m["robustness"]
    models = {r["model"] for r in rob["adversarial_training"]}
    assert any("PGD-trained" in x for x in models) and "mlp (standard)" in models
    at = {(r["model"].startswith("mlp_at"), r["attack"], r["eps"]): r["roc_auc"] for r in rob["adversarial_training"]}
    assert at[(True, "pgd", 0.5)] > at[(False, "pgd", 0.5)]             # adversarial training buys robustness at ε = 0.5 SD
    assert {r["attack"].split(" (")[0] for r in rob["ensemble_defence"]} >= {"non-adaptive", "adaptive"}
    assert {"int8" in v["variant"] for v in m["compression"]["variants"]} == {True, False}
    assert {o["score"] for o in m["shift"]["ood"]} == {"msp", "energy", "mahalanobis"}
    comp = {c["clause"]: c["status"] for c in m["compliance"]}
    assert comp["5.4.3.2"] == "met" and comp["5.2.4.1–2"] == "met"


def test_verify_names_a_tampered_or_missing_robustness_artifact(run):
    _, res = run
    p = Path(res["random_forest"]["path"])
    grid = p / "robustness" / "attack_grid.csv"
    original = grid.read_bytes()
    try:
        grid.write_bytes(original[:-2] + bytes([original[-2] ^ 1]) + original[-1:])
        assert verify_manifest(p)["changed"] == ["robustness/attack_grid.csv"]
        grid.unlink()
        assert verify_manifest(p)["missing"] == ["robustness/attack_grid.csv"]
    finally:
        grid.write_bytes(original)
    assert verify_manifest(p) == {"changed": [], "missing": [], "extra": [], "pruned": []}


@pytest.mark.parametrize("body, message", [
    ({"attack": "pgd"}, "unknown key(s) attack"),
    ({"eps_tabular": "big"}, "eps_tabular: 'big' is not a number"),
    ({"rows": "3"}, "rows = 3: must be in"),
    ({"margin": "-0.1"}, "margin = -0.1: must be in"),
])
def test_bad_robustness_settings_stop_before_any_job(tmp_path, body, message):
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "datasets": "breast_cancer", "models": "linear"},
                       {"robustness": body})
    with pytest.raises(MedwbError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_matrix(load_settings(s))
    assert not (tmp_path / "reports").exists()


def test_switched_off_sections_say_so(tmp_path):
    "[robustness] enabled = false (what most tests use): the three sections say they were switched off; the compliance rows read not yet."
    from medwb.run.execute import execute_report
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "datasets": "breast_cancer", "models": "linear", "n_boot": 100})
    [_, job] = build_matrix(load_settings(s))
    m = execute_report(job, tmp_path / "out", {"version_id": "test", "inputs": job.inputs})
    na = m["not_applicable"]
    assert all("enabled = false" in na[k] for k in ("robustness", "distribution shift", "compressed variants")), na
    assert {c["clause"]: c["status"] for c in m["compliance"]}["5.4.3.1"] == "not yet"


def test_an_out_of_range_eps_is_refused_by_name_and_the_rest_runs(tmp_path):
    from medwb.robustness.attacks import robustness_config
    cfg = robustness_config({"eps_tabular": "-0.1, 0.2, 3", "eps_imaging": "0, 4"})
    assert cfg.eps_tabular == (0.2,) and cfg.eps_imaging == (4.0,)
    assert [r.split(":")[1].strip() for r in cfg.rejected] == ["negative", "above 1 (1 SD)", "ε = 0 is the clean row, always computed"]

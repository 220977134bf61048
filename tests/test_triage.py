"""Pre-consultation triage (clause 6.2.1): the `medwb triage` command, its safe answers to bad input, and a triage report
published by the run matrix, verified and reproduced, with no planted identifier in any file of the version."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import MEDWB, ROOT, medwb, write_settings
from medwb.run.cli import main


def _triage(capsys, settings: Path, *args: str) -> tuple[int, str, str]:
    "`medwb triage ...` in this process (the command's own process start is tested once, with standard input)."
    rc = main(["--settings", str(settings), "triage", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err

SMALL = {"graphs": "common", "vignettes": "120", "questioning_vignettes": "30", "turn_budget": "6"}


def _settings(tmp_path: Path, triage: dict | None = None, data_dir: Path | None = None) -> Path:
    return write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "data_dir": str(data_dir or ROOT / "data"),
                                     "datasets": "clinic", "models": "dummy", "n_boot": 200},
                          {"scenario.triage": {**SMALL, **(triage or {})}})


def test_triage_command_answers_in_chinese_and_english(tmp_path, capsys):
    s = _settings(tmp_path)
    rc, zh, err = _triage(capsys, s, "我胸口痛，出汗，左臂发麻，已经半小时了")
    assert rc == 0, err
    assert "急性心肌梗死" in zh and "心血管内科" in zh and "急诊" in zh and "下一个问题" in zh, zh
    rc, en, err = _triage(capsys, s, "I have had a sore throat and a runny nose for three days, no fever")
    assert rc == 0, err
    assert "Common cold" in en and "urgency: self-care" in en and "no fever" in en and "next question" in en, en


def test_triage_consultation_on_stdin_keeps_no_identifier(tmp_path):
    s = _settings(tmp_path)
    planted = ["王芳", "13912345678", "110105199003071234", "wang.fang@example.org"]
    text = "我叫王芳，电话13912345678，身份证号110105199003071234，邮箱wang.fang@example.org。我发烧，咳嗽三天了\ny\nn\n?\nq\n"
    r = subprocess.run([MEDWB, "--settings", str(s), "triage", "--json"], input=text, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout)
    assert [t.get("answer") for t in js["transcript"][1:]] == ["yes", "no", "don't know"]
    assert js["assessment"]["ranking"] and js["assessment"]["urgency"] in ("self_care", "routine", "urgent", "emergency")
    for x in planted: assert x not in r.stdout + r.stderr, x
    assert not list(tmp_path.rglob("*.jsonl")) and not (tmp_path / "reports").exists()   # a consultation stores nothing


@pytest.mark.parametrize("text", ["", "今天天气很好", "no fever, no cough", "J'ai mal à la tête", "头痛" * 1500])
def test_triage_bad_input_gets_the_safe_default(tmp_path, capsys, text):
    rc, out, err = _triage(capsys, _settings(tmp_path), text)
    assert rc == 0, err
    assert "no ranking: see a doctor" in out and ("routine appointment" in out or "门诊预约" in out), out
    assert "possible diseases" not in out and "可能的疾病" not in out, out


def test_triage_refuses_a_broken_graph_and_bad_settings_before_any_job(tmp_path, capsys):
    data = tmp_path / "data"; (data / "triage").mkdir(parents=True)
    ttl = (ROOT / "data/triage/common_kg.ttl").read_text(encoding="utf-8")
    (data / "triage/common_kg.ttl").write_text(ttl.replace("kg:department kg:dept_cardiology ;", "", 1), encoding="utf-8")
    rc, _, err = _triage(capsys, _settings(tmp_path, data_dir=data), "头痛")
    assert rc == 2 and "needs exactly one kg:department (it has none)" in err, err
    (data / "triage/common_kg.ttl").write_text(ttl[: len(ttl) // 2], encoding="utf-8")
    rc, _, err = _triage(capsys, _settings(tmp_path, data_dir=data), "头痛")
    assert rc == 2 and "is not valid Turtle" in err, err
    for bad, msg in (({"turn_budget": "0"}, "turn_budget = 0"), ({"graphs": "snomed"}, "unknown graph(s) snomed"), ({"vignets": "5"}, "unknown key(s) vignets")):
        rc = main(["--settings", str(_settings(tmp_path, bad)), "run"]); err = capsys.readouterr().err
        assert rc == 2 and msg in err, err
        assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").rglob("manifest.json"))


def test_triage_report_is_published_verified_and_reproduced(tmp_path):
    from medwb.core.settings import load_settings
    from medwb.run.jobs import build_matrix
    from medwb.run.execute import run_job
    from medwb.scenarios.evaluate import planted_identifiers
    from medwb.scenarios.kg import common_graph
    from medwb.scenarios.vignettes import generate_vignettes
    s = _settings(tmp_path)
    job = next(j for j in build_matrix(load_settings(s)) if j.task == "triage")
    res = run_job(job)
    assert res["status"] == "ok", res
    v = Path(res["path"])
    m = json.loads((v / "metrics.json").read_text())["metrics"]
    assert m["phi_survived"] == 0 and m["top1"] > m["keyword_top1"] > m["random_top1"], m
    assert m["eig_mean_turns"] < m["random_mean_turns"], m
    for f in ("report.html", "vignettes.csv", "results.csv", "questioning.csv", "transcripts.json", "figures/questioning.png"):
        assert (v / f).exists(), f
    html = (v / "report.html").read_text(encoding="utf-8")
    assert "Under-triage" in html or "under_triage" in html
    # no identifier planted by the privacy section is anywhere in the version
    kb = common_graph(ROOT / "data")
    vs = generate_vignettes(kb, 120, 0, json.loads((v / "metrics.json").read_text())["vignettes"]["noise"], 0.5)
    planted = [x for i, g in enumerate(vs[:40]) for x in planted_identifiers(i, g.lang, 0)[1]]
    blob = "\n".join(p.read_text(encoding="utf-8", errors="ignore") for p in v.rglob("*") if p.is_file() and p.suffix != ".png")
    assert planted and not [x for x in planted if x in blob]
    r = medwb("verify", res["version_id"], settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    r = medwb("list", "--dataset", "triage_common", settings=s)
    assert res["version_id"] in r.stdout
    r = medwb("reproduce", res["version_id"], settings=s)
    assert r.returncode == 0 and "identical" in r.stdout.lower(), r.stdout + r.stderr


def test_hpo_graph_ranks_rare_diseases_by_similarity():
    from medwb.scenarios.kg import hpo_graph
    from medwb.scenarios.systems import HpoTriage, BayesTriage, KeywordTriage
    from medwb.scenarios.vignettes import generate_vignettes
    from medwb.scenarios.evaluate import run_vignettes, summarise
    kb = hpo_graph(25, seed=0)
    assert len(kb.diseases) == 25 and kb.languages == ("en",) and all(d.code.startswith("OMIM:") for d in kb.diseases)
    assert kb.meta["version"].startswith("HPO ")
    vs = generate_vignettes(kb, 60, seed=1)
    assert all(v.lang == "en" for v in vs)
    top1 = {type(s).__name__: summarise(run_vignettes(s, vs))["top1"]["estimate"] for s in (BayesTriage(kb), HpoTriage(kb), KeywordTriage(kb))}
    assert min(top1.values()) > 1 / 25 * 3, top1   # all far above random (0.04)
    r, a = HpoTriage(kb).triage("我头痛")   # Chinese text on an English-only graph
    assert a.ranking == [] and any("English terms only" in m for m in r.messages)

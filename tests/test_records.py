"""Structured records (clause 6.2.2): `medwb record extract` on Chinese and English notes, the record store (edit,
history, byte-for-byte reconstruction, tampering refused), bad input, and a records report published by the run
matrix, verified and reproduced, with no planted identifier in any file of the version."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, medwb, write_settings
from medwb.run.cli import main

ZH = """出院小结
姓名：刘洋  性别：男  住院号：ZY1234567  联系电话：13900001111
主诉：发热、咳嗽3天。
现病史：患者3天前受凉后出现发热、咳嗽、咳痰，无胸痛，无咯血。
既往史：高血压病史5年，口服氨氯地平5mg qd。否认糖尿病史。
过敏史：青霉素过敏。
查体：T 38.5℃，P 102次/分，BP 135/85mmHg，SpO2 94%。
辅助检查：白细胞 13.5×10^9/L，C反应蛋白 86mg/L。
出院诊断：1.社区获得性肺炎 2.高血压病 3.肺结核待排
出院医嘱：左氧氟沙星 0.5g 口服 qd。
"""
EN = """Discharge summary
Patient: Mary Collins  MRN: 5512093  phone 07700 900456
Chief complaint: cough and fever for 3 days.
HPI: Productive cough and fever. Denies chest pain.
PMH: history of type 2 diabetes.
Medications: metformin 500 mg PO BID.
Allergies: NKDA.
Exam: T 38.6 C, HR 104, BP 132/80 mmHg, SpO2 93%.
Labs: WBC 14.2 x10^9/L, CRP 86 mg/L.
Assessment: community acquired pneumonia. Possible pulmonary embolism.
Plan: ceftriaxone 2 g IV daily.
"""
SMALL = {"notes": "40", "zh_share": "0.5"}


def _settings(tmp_path: Path, records: dict | None = None, medwb_keys: dict | None = None) -> Path:
    return write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "data_dir": str(ROOT / "data"), "datasets": "clinic",
                                     "models": "dummy", "n_boot": 200, **(medwb_keys or {})},
                          {"scenario.records": {**SMALL, "store": str(tmp_path / "store"), **(records or {})}})


def _record(capsys, settings: Path, *args: str) -> tuple[int, str, str]:
    rc = main(["--settings", str(settings), "record", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _resources(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


@pytest.mark.parametrize("text,planted", [(ZH, ["刘洋", "ZY1234567", "13900001111"]), (EN, ["Mary Collins", "5512093", "07700 900456"])])
def test_extract_prints_a_valid_bundle_with_refuted_negations_and_spans(tmp_path, capsys, text, planted):
    from medwb.scenarios.fhir import validate_bundle, SPAN_URL
    note = tmp_path / "note.txt"; note.write_text(text, encoding="utf-8")
    rc, out, err = _record(capsys, _settings(tmp_path), "extract", str(note))
    assert rc == 0, err
    b = json.loads(out)
    assert validate_bundle(b) == []
    conds = _resources(b, "Condition")
    refuted = {c["code"]["coding"][0]["code"] for c in conds if c["verificationStatus"]["coding"][0]["code"] == "refuted"}
    provisional = {c["code"]["coding"][0]["code"] for c in conds if c["verificationStatus"]["coding"][0]["code"] == "provisional"}
    assert "sym_chest_pain" in refuted and ("A16.2" in provisional or "I26.9" in provisional), (refuted, provisional)
    assert "J18.9" in {c["code"]["coding"][0]["code"] for c in conds}
    obs = {o["code"]["coding"][0]["code"]: o["valueQuantity"] for o in _resources(b, "Observation")}
    assert obs["8480-6"]["value"] == (135 if text is ZH else 132) and obs["8480-6"]["code"] == "mm[Hg]" and obs["6690-2"]["code"] == "10*9/L"
    meds = _resources(b, "MedicationStatement")
    assert meds and all(m["dosage"][0]["doseAndRate"][0]["doseQuantity"]["system"] == "http://unitsofmeasure.org" for m in meds)
    # every element points at its words in the scrubbed note; no identifier is in the Bundle
    for r in conds + list(_resources(b, "Observation")) + meds:
        spans = [e for e in r["extension"] if e["url"] == SPAN_URL]
        assert spans and all({x["url"] for x in s["extension"]} >= {"start", "end", "text"} for s in spans)
    assert not [p for p in planted if p in out + err]


def test_store_edit_history_reconstruct_and_tampering(tmp_path, capsys):
    from medwb.scenarios.fhir import bundle_json
    s = _settings(tmp_path)
    note = tmp_path / "n1.txt"; note.write_text(ZH, encoding="utf-8")
    rc, out, err = _record(capsys, s, "extract", str(note), "--store", "--id", "p001")
    assert rc == 0 and "revision 1" in err, err
    original = bundle_json(json.loads(out)).encode()
    cid = next(r["id"] for r in _resources(json.loads(out), "Condition") if r["code"]["coding"][0]["code"] == "A16.2")
    rc, out, err = _record(capsys, s, "edit", "p001", "--set", f"Condition/{cid}.verificationStatus.coding[0].code=refuted",
                           "--reason", "sputum smear negative", "--author", "dr-reviewer")
    assert rc == 0 and "revision 2" in out, err
    rc, out, err = _record(capsys, s, "history", "p001")
    assert rc == 0 and "revision 2" in out and "dr-reviewer" in out and "sputum smear negative" in out
    assert f"Condition/{cid}.verificationStatus.coding[0].code" in out and '"provisional" → "refuted"' in out, out
    rc = main(["--settings", str(s), "record", "show", "p001", "--rev", "1"])
    assert rc == 0 and capsys.readouterr().out.encode() == original   # byte for byte
    # a stored revision is never replaced; a changed byte is named; an unknown id is named
    f = tmp_path / "store" / "p001" / "0001.json"
    f.write_bytes(f.read_bytes().replace("社区获得性肺炎".encode(), "社区获得性肺癌".encode()))
    rc, out, err = _record(capsys, s, "history", "p001")
    assert rc == 2 and "revision 1" in err and "tampered" in err, err
    rc, out, err = _record(capsys, s, "history", "nobody")
    assert rc == 2 and "no record 'nobody'" in err, err


def test_store_is_encrypted_at_rest_with_a_key_folder(tmp_path, capsys):
    from medwb.privacy.crypto import KekStore
    keys = tmp_path / "keys"; KekStore(keys, create=True)
    s = _settings(tmp_path, medwb_keys={"kek_dir": str(keys)})
    note = tmp_path / "n.txt"; note.write_text(EN, encoding="utf-8")
    rc, out, err = _record(capsys, s, "extract", str(note), "--store", "--id", "enc1")
    assert rc == 0, err
    f = next((tmp_path / "store" / "enc1").glob("0001.json*"))
    assert f.name.endswith(".enc") and b"pneumonia" not in f.read_bytes()
    rc = main(["--settings", str(s), "record", "show", "enc1"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["resourceType"] == "Bundle"


def test_bad_input_is_named_and_nothing_invented(tmp_path, capsys):
    from medwb.core.settings import load_settings
    from medwb.scenarios.terms import terminology
    from medwb.scenarios.extract import RuleExtractor
    X = RuleExtractor(terminology(ROOT / "data"))
    for text, why in (("", "empty"), ("今天天气很好，家属来电询问探视时间。", "no clinical content"), ("头痛" * 12_000, "over the limit"),
                      ("Labs: glucose 7.2 mmol/dL", "not one of this test's units"), ("Labs: CRP 12 mgs/litre", "not a unit"), ("Plan: metformin 500 twice daily", "dose without a unit")):
        ex = X.extract(text)
        assert any(why in i["why"] for i in ex.issues), (why, ex.issues)
    ex = X.extract("Plan: metformin 500 twice daily")
    assert [m.dose for m in ex.of("medication")] == [None]
    s = _settings(tmp_path)
    bad = tmp_path / "scan.txt"; bad.write_bytes(b"\x00\x01PDF" * 50)   # not text: refused, naming the file
    r = medwb("record", "extract", str(bad), settings=s)
    assert r.returncode != 0 and "scan.txt" in r.stderr, r.stderr
    from medwb.run.jobs import build_matrix
    assert not [j for j in build_matrix(load_settings(s, records="none")) if j.task == "records"]   # medwb run --records none
    [j] = [j for j in build_matrix(load_settings(s, records="25")) if j.task == "records"]
    assert j.params["notes"] == 25
    with pytest.raises(Exception, match="unknown key"):
        from medwb.scenarios.records import records_config
        records_config({"note": "5"})


def test_records_report_is_published_verified_and_reproduced(tmp_path, capsys):
    from medwb.core.settings import load_settings
    from medwb.run.jobs import build_matrix
    from medwb.run.execute import run_job
    from medwb.scenarios.terms import terminology
    from medwb.scenarios.notes import generate_notes, handwritten_notes
    s = _settings(tmp_path)
    job = next(j for j in build_matrix(load_settings(s)) if j.task == "records")
    res = run_job(job)
    assert res["status"] == "ok", res
    v = Path(res["path"])
    rec = json.loads((v / "metrics.json").read_text())
    m = rec["metrics"]
    assert m["phi_survived"] == 0 and m["validity"] == 1.0 and m["code_f1"] > 0.8 and "hand_code_f1" in m, m
    assert rec["store"]["reconstructed_exactly"] and rec["store"]["tamper_detected"]
    html = (v / "report.html").read_text(encoding="utf-8")
    assert "FHIR validity" in html and "precision@" in html
    T = terminology(ROOT / "data")
    planted = [p for n in generate_notes(T, 40, 0, 0.5) + handwritten_notes(ROOT / "data") for p in n.planted]
    blob = "\n".join(p.read_text(encoding="utf-8", errors="ignore") for p in v.rglob("*") if p.is_file() and p.suffix != ".png")
    assert planted and not [x for x in planted if x in blob]
    assert main(["--settings", str(s), "verify", res["version_id"]]) == 0
    assert main(["--settings", str(s), "reproduce", res["version_id"]]) == 0 and "identical" in capsys.readouterr().out.lower()

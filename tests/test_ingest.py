"""Ingestion (clause 5.1.1): every reader on good and bad input.

Each format loads with exact counts and codes; every bad record is in the `IngestLog` with its location
(`n_read == n_loaded + len(dropped)`); every file that cannot be read at all is a `MedwbError` naming it.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medwb.core.settings import MedwbError
from medwb.data.ingest import DICOM_COLUMNS, FHIR_COLUMNS, HL7_COLUMNS, IngestLog, code_system, dicom_series_table, hl7_time, read_dicom_headers, read_fhir_bundle, read_hl7_oru, read_table

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def check(log: IngestLog, n_read: int, n_loaded: int) -> None:
    "The counts, and the completeness invariant."
    assert (log.n_read, log.n_loaded) == (n_read, n_loaded), log.summary()
    assert log.n_read == log.n_loaded + len(log.dropped) and log.accounted


def error(fn, path, *args) -> str:
    "The MedwbError message of `fn(path)`, asserted to name the file."
    with pytest.raises(MedwbError) as e: fn(path, *args)
    assert str(path) in str(e.value)
    return str(e.value)


# ---------------------------------------------------------------- IngestLog

def test_log_drop_summary_table_merge():
    a = IngestLog("a.csv", 3, 2, details={"encoding": "utf-8"})
    a.drop("a.csv", "line 3", "4 fields, expected 3")
    b = IngestLog("b.hl7", 2, 1)
    b.drop("b.hl7", "message 1 segment 4", "OBX-3 has no observation code")
    m = a.merge(b)
    check(m, 5, 3)
    assert m.summary() == {"source": "a.csv + b.hl7", "n_read": 5, "n_loaded": 3, "n_dropped": 2,
                           "parts": [a.summary(), b.summary()]}
    assert a.summary()["encoding"] == "utf-8"
    assert m.table().location.tolist() == ["line 3", "message 1 segment 4"]
    assert not IngestLog("x", n_read=1).accounted


def test_code_system():
    assert code_system("http://loinc.org") == code_system("LN") == "LOINC"
    assert code_system("http://snomed.info/sct") == "SNOMED CT"
    assert code_system("http://hl7.org/fhir/sid/icd-10") == code_system("http://hl7.org/fhir/sid/icd-10-cm") == "ICD-10"
    assert code_system("http://example.org/local") == "http://example.org/local" and code_system(None) is None


# ---------------------------------------------------------------- tables

def test_csv_loads_values_as_strings(tmp_path):
    p = tmp_path / "labs.csv"
    p.write_text("id,glucose,note\n1,5.4,\n2,NA,fasting\n3,-,\n", encoding="utf-8")
    df, log = read_table(p)
    check(log, 3, 3)
    assert log.details == {"format": "delimited", "encoding": "utf-8", "sep": ","}
    assert df["glucose"].tolist() == ["5.4", "NA", "-"] and df["id"].tolist() == ["1", "2", "3"]
    assert df["note"].isna().tolist() == [True, False, True]


def test_csv_malformed_rows_logged_with_line_numbers(tmp_path):
    p = tmp_path / "bad_rows.csv"
    p.write_text('a,b,c\n1,2,3\n4,5\n6,7,8,9\n\n10,"eleven\nand more",12\n13,14,15,16\n17,18,19\n')
    df, log = read_table(p)
    check(log, 6, 3)
    assert df["a"].tolist() == ["1", "10", "17"] and df["b"].iloc[1] == "eleven\nand more"
    assert log.table().to_dict("records") == [
        {"file": str(p), "location": "line 3", "reason": "2 fields, expected 3"},
        {"file": str(p), "location": "line 4", "reason": "4 fields, expected 3"},
        {"file": str(p), "location": "line 8", "reason": "4 fields, expected 3"}]   # line 6-7 is one quoted record


def test_csv_utf8_bom_stripped(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_bytes("\ufeffpatient_id,sex\r\nP1,F\r\nP2,M\r\n".encode("utf-8"))
    df, log = read_table(p)
    check(log, 2, 2)
    assert df.columns.tolist() == ["patient_id", "sex"] and log.details["encoding"] == "utf-8 (BOM)"
    assert df["sex"].tolist() == ["F", "M"]


def test_csv_gbk_chinese(tmp_path):
    p = tmp_path / "his_export.csv"
    p.write_bytes("姓名,性别,诊断\n王芳,女,2型糖尿病\n李伟,男,原发性高血压\n".encode("gbk"))
    df, log = read_table(p)
    check(log, 2, 2)
    assert log.details["encoding"] == "gb18030"
    assert df.columns.tolist() == ["姓名", "性别", "诊断"]
    assert df["诊断"].tolist() == ["2型糖尿病", "原发性高血压"] and df["姓名"].iloc[0] == "王芳"


def test_csv_explicit_encoding_and_separator(tmp_path):
    p = tmp_path / "labs.txt"
    p.write_bytes("姓名|值\n张敏|7.6\n".encode("gbk"))
    df, log = read_table(p, sep="|", encoding="gbk")
    assert df.to_dict("records") == [{"姓名": "张敏", "值": "7.6"}] and log.details["encoding"] == "gbk"
    assert "is not valid utf-8 text" in error(read_table, p, "|", "utf-8")


def test_tsv_and_sniffed_separators(tmp_path):
    t = tmp_path / "labs.tsv"
    t.write_text("a\tb\n1,5\t2\n")                 # a comma inside a value: the extension decides
    df, log = read_table(t)
    assert log.details["sep"] == "\t" and df.to_dict("records") == [{"a": "1,5", "b": "2"}]
    s = tmp_path / "labs.csv"
    s.write_text("a;b;c\n1,5;2;3\n")
    df, log = read_table(s)
    assert log.details["sep"] == ";" and df["a"].tolist() == ["1,5"]


def test_header_only_csv_is_empty_table(tmp_path):
    p = tmp_path / "header.csv"
    p.write_text("a,b\n")
    df, log = read_table(p)
    check(log, 0, 0)
    assert df.columns.tolist() == ["a", "b"] and len(df) == 0


def test_table_errors_name_the_file(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "blank.csv").write_text("\n  \n")
    (tmp_path / "binary.csv").write_bytes(b"a,b\n\x80\xff,\xfe\n")
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1\x00\x01 truncated")
    (tmp_path / "dup.csv").write_text("a,a\n1,2\n")
    assert "is empty" in error(read_table, tmp_path / "empty.csv")
    assert "is empty" in error(read_table, tmp_path / "blank.csv")
    assert "is not valid utf-8 or gb18030 text" in error(read_table, tmp_path / "binary.csv")
    assert "is not a readable Parquet file" in error(read_table, tmp_path / "corrupt.parquet")
    assert "repeated column name(s)" in error(read_table, tmp_path / "dup.csv")
    assert "does not exist" in error(read_table, tmp_path / "missing.csv")


def test_parquet_keeps_types(tmp_path):
    p = tmp_path / "labs.parquet"
    pd.DataFrame({"id": ["a", "b", "c"], "glucose": [5.4, np.nan, 8.9], "age": [60, 70, 80]}).to_parquet(p)
    df, log = read_table(p)
    check(log, 3, 3)
    assert log.details == {"format": "parquet"} and df["age"].tolist() == [60, 70, 80]
    assert df["glucose"].isna().tolist() == [False, True, False]
    # recognised by content, whatever the extension
    q = tmp_path / "labs.dat"
    q.write_bytes(p.read_bytes())
    assert read_table(q)[1].details["format"] == "parquet"


def test_shipped_gbk_export():
    df, log = read_table(SAMPLES / "lab_export_gbk.csv")
    check(log, 5, 4)
    assert log.details["encoding"] == "gb18030" and log.dropped[0]["location"] == "line 5"
    assert df["住院号"].tolist() == ["ZY0001", "ZY0002", "ZY0003", "ZY0005"]


# ---------------------------------------------------------------- FHIR

def write_bundle(path: Path, *entries, key="entry") -> Path:
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", key: list(entries)}))
    return path


GLUCOSE = {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]}


def test_shipped_bundle():
    t, log = read_fhir_bundle(SAMPLES / "bundle.json")
    check(log, 25, 25)
    assert {k: len(v) for k, v in t.items()} == {"patients": 5, "encounters": 5, "observations": 12, "conditions": 6}
    assert {k: v.columns.tolist() for k, v in t.items()} == FHIR_COLUMNS
    obs = t["observations"]
    assert sorted(obs.code.unique()) == ["2339-0", "4548-4", "8480-6"] and set(obs.system) == {"LOINC"}
    assert obs.groupby("code").value.count().to_dict() == {"2339-0": 5, "4548-4": 2, "8480-6": 5}
    sbp = obs[(obs.code == "8480-6") & (obs.patient_id == "pat-002")].iloc[0]
    assert (sbp.value, sbp.unit, sbp.encounter_id, sbp.status) == (152.0, "mmHg", "enc-002", "final")
    cond = t["conditions"]
    assert sorted(zip(cond.system, cond.code)) == sorted([("ICD-10", "E11.9"), ("SNOMED CT", "44054006")] * 2
                                                         + [("ICD-10", "I10"), ("SNOMED CT", "38341003")])
    assert cond.condition_id.nunique() == 3 and set(cond.clinical_status) == {"active"}
    p1 = t["patients"].set_index("patient_id").loc["pat-001"]
    assert (p1.gender, p1.birth_date, p1.family, p1.given, p1.postcode) == ("female", "1958-04-12", "Wang", "Fang", "430071")
    e5 = t["encounters"].set_index("encounter_id").loc["enc-005"]
    assert (e5["class"], e5.patient_id, e5.start, e5.end) == ("EMER", "pat-005", "2024-03-08T22:15:00+08:00", "2024-03-09T02:00:00+08:00")


def test_fhir_urn_uuid_references_and_components(tmp_path):
    pat, enc = "urn:uuid:11111111-1111-4111-8111-111111111111", "urn:uuid:22222222-2222-4222-8222-222222222222"
    bp = {"resourceType": "Observation", "status": "final", "subject": {"reference": pat}, "encounter": {"reference": enc},
          "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}, "effectiveDateTime": "2024-03-05",
          "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": c}]},
                         "valueQuantity": {"value": v, "unit": "mmHg"}} for c, v in (("8480-6", 130), ("8462-4", 85))]}
    p = write_bundle(tmp_path / "b.json",
                     {"fullUrl": pat, "resource": {"resourceType": "Patient", "gender": "male"}},
                     {"fullUrl": enc, "resource": {"resourceType": "Encounter", "status": "finished", "subject": {"reference": pat},
                                                   "class": {"code": "AMB"}}},
                     {"fullUrl": "urn:uuid:33333333-3333-4333-8333-333333333333", "resource": bp})
    t, log = read_fhir_bundle(p)
    check(log, 3, 3)
    obs = t["observations"]
    assert obs[["code", "value", "patient_id", "encounter_id"]].values.tolist() == [["8480-6", 130.0, pat, enc], ["8462-4", 85.0, pat, enc]]
    assert obs.effective.tolist() == ["2024-03-05"] * 2 and t["patients"].patient_id.tolist() == [pat]


def test_fhir_unknown_and_unsupported_types(tmp_path):
    p = write_bundle(tmp_path / "b.json", {"resource": {"resourceType": "Patient", "id": "p1"}},
                     {"resource": {"resourceType": "Spaceship", "id": "enterprise"}},
                     {"resource": {"resourceType": "Medication", "id": "m1"}},
                     {"request": {"method": "DELETE", "url": "Patient/p0"}})
    t, log = read_fhir_bundle(p)
    check(log, 4, 1)
    assert log.table().location.tolist() == ["entry 2 (Spaceship/enterprise)", "entry 3 (Medication/m1)", "entry 4"]
    r = log.table().reason.tolist()
    assert r[0].startswith("unknown resource type 'Spaceship'") and r[1].startswith("unsupported resource type 'Medication'")
    assert r[2] == "entry has no resource" and len(t["patients"]) == 1


def test_fhir_dangling_references(tmp_path):
    p = write_bundle(tmp_path / "b.json",
                     {"resource": {"resourceType": "Patient", "id": "p1"}},
                     {"resource": {"resourceType": "Observation", "id": "o1", "status": "final", "code": GLUCOSE,
                                   "subject": {"reference": "Patient/p404"}}},
                     {"resource": {"resourceType": "Observation", "id": "o2", "status": "final", "code": GLUCOSE,
                                   "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/e404"}}},
                     {"resource": {"resourceType": "Observation", "id": "o3", "status": "final", "code": GLUCOSE,
                                   "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}}},
                     {"resource": {"resourceType": "Observation", "id": "o4", "status": "final", "code": GLUCOSE}},
                     {"resource": {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
                                   "subject": {"reference": "Patient/p404"}}},
                     {"resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                                   "encounter": {"reference": "Encounter/e1"}, "code": {"text": "unwell"}}},
                     {"resource": {"resourceType": "Observation", "id": "o5", "status": "final", "code": GLUCOSE,
                                   "subject": {"reference": "Encounter/e1"}}},
                     {"resource": {"resourceType": "Observation", "id": "o6", "status": "final", "code": GLUCOSE,
                                   "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 5.5, "unit": "mmol/L"}}})
    t, log = read_fhir_bundle(p)
    check(log, 9, 2)
    assert dict(zip(log.table().location, log.table().reason)) == {
        "entry 2 (Observation/o1)": "subject 'Patient/p404' is not in the bundle",
        "entry 3 (Observation/o2)": "encounter 'Encounter/e404' is not in the bundle",
        "entry 4 (Observation/o3)": "subject 'urn:uuid:00000000-0000-4000-8000-000000000000' is not in the bundle",
        "entry 5 (Observation/o4)": "subject has no reference",
        "entry 6 (Encounter/e1)": "subject 'Patient/p404' is not in the bundle",
        "entry 7 (Condition/c1)": "encounter 'Encounter/e1' refers to entry 6 (Encounter), which was dropped",
        "entry 8 (Observation/o5)": "subject 'Encounter/e1' refers to entry 6 (Encounter), which was dropped"}
    assert t["observations"][["observation_id", "value"]].values.tolist() == [["o6", 5.5]]


def test_fhir_invalid_resource(tmp_path):
    p = write_bundle(tmp_path / "b.json",
                     {"resource": {"resourceType": "Patient", "id": "p1", "birthDate": "31/12/1970"}},
                     {"resource": {"resourceType": "Patient", "id": "p2", "nickname": "Bob"}},
                     {"resource": {"resourceType": "Patient", "id": "p3"}},
                     {"resource": {"resourceType": "Patient", "id": "p3"}},
                     {"resource": {"resourceType": "Observation", "id": "o1", "status": "final", "code": GLUCOSE,
                                   "subject": {"reference": "Patient/p3"}, "valueQuantity": {"value": "five"}}})
    t, log = read_fhir_bundle(p)
    check(log, 5, 1)
    r = log.table().reason.tolist()
    assert r[0].startswith("invalid: birthDate:") and r[1] == "invalid: nickname: Extra inputs are not permitted"
    assert r[2] == "duplicate Patient 'p3'" and r[3].startswith("invalid: valueQuantity.value:")
    assert t["patients"].patient_id.tolist() == ["p3"] and len(t["observations"]) == 0


def test_fhir_file_errors(tmp_path):
    (tmp_path / "nonjson.json").write_text("<Bundle/>")
    (tmp_path / "patient.json").write_text(json.dumps({"resourceType": "Patient", "id": "p1"}))
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "entries.json").write_text(json.dumps({"resourceType": "Bundle", "entry": {"resource": {}}}))
    assert "is not valid JSON" in error(read_fhir_bundle, tmp_path / "nonjson.json")
    assert "is not a FHIR Bundle (resourceType 'Patient')" in error(read_fhir_bundle, tmp_path / "patient.json")
    assert "is not a FHIR Bundle" in error(read_fhir_bundle, tmp_path / "list.json")
    assert "Bundle.entry is not a list" in error(read_fhir_bundle, tmp_path / "entries.json")
    assert "does not exist" in error(read_fhir_bundle, tmp_path / "missing.json")
    t, log = read_fhir_bundle(write_bundle(tmp_path / "empty.json"))
    check(log, 0, 0)
    assert all(len(v) == 0 for v in t.values())


# ---------------------------------------------------------------- HL7 v2

MSH = "MSH|^~\\&|LIS|LAB|EHR|HOSP|20240305143000||{type}|{id}|P|2.5"


def oru(mid, pid, *obx, obr="OBR|1|||24323-8^CMP^LN|||20240305120000", type_="ORU^R01"):
    return [MSH.format(type=type_, id=mid)] + ([f"PID|1||{pid}^^^HOSP^MR||Doe^Jane"] if pid else []) + [obr, *obx]


def test_shipped_oru():
    df, log = read_hl7_oru(SAMPLES / "oru_r01.hl7")
    check(log, 7, 7)
    assert df.columns.tolist() == HL7_COLUMNS
    assert df.message_control_id.tolist() == ["MSG00001"] * 3 + ["MSG00002"] * 2 + ["MSG00003"] * 2
    assert df.patient_id.unique().tolist() == ["pat-001", "pat-002", "pat-003"] and set(df.system) == {"LOINC"}
    assert df[df.code == "2339-0"].value.tolist() == [8.9, 5.4]
    assert df.abnormal_flag.fillna("").tolist() == ["H", "N", "N", "N", "N", "", "N"]   # the ST result has no flag


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_hl7_segment_separators(tmp_path, sep):
    msgs = oru("M1", "P1", "OBX|1|NM|2339-0^Glucose^LN||5.4|mmol/L^^UCUM|3.9-6.1|N|||F|||20240305143000+0800") + \
           oru("M2", "P2", "OBX|1|ST|5778-6^Color of Urine^LN||Yellow||||||F", "OBX|2|CWE|5767-9^Appearance^LN||CLR^Clear^L||||||F")
    p = tmp_path / "m.hl7"
    p.write_bytes(("\x0b" + sep.join(msgs) + sep + "\x1c\r").encode())
    df, log = read_hl7_oru(p)
    check(log, 3, 3)
    assert df.to_dict("records")[0] == {
        "message_control_id": "M1", "patient_id": "P1", "order_code": "24323-8", "value_type": "NM", "system": "LOINC",
        "code": "2339-0", "display": "Glucose", "value": 5.4, "unit": "mmol/L", "reference_range": "3.9-6.1",
        "abnormal_flag": "N", "status": "F", "time": "2024-03-05T14:30:00+08:00"}
    assert df.value.tolist()[1:] == ["Yellow", "CLR^Clear^L"] and df.time.tolist()[1:] == ["2024-03-05T12:00:00"] * 2


def test_hl7_broken_segments(tmp_path):
    lines = oru("M1", "P1", "OBX|1|NM|2339-0^Glucose^LN||5.4|mmol/L",
                "obx|2|NM|2823-3^Potassium^LN||4.1|mmol/L",          # lower-case segment ID: not a segment
                "garbage without fields",
                "OBX|3|NM|^^LN||4.1|mmol/L",                          # no code
                "OBX|4|NM|2160-0^Creatinine^LN||0.9|mg/dL|||||F|||2024-03-05",   # not an HL7 TS
                "OBX|5|NM|2160-0^Creatinine^LN||0.9|mg/dL")
    p = tmp_path / "broken.hl7"
    p.write_text("\r".join(lines))
    df, log = read_hl7_oru(p)
    check(log, 6, 2)
    assert df.code.tolist() == ["2339-0", "2160-0"]
    assert log.table()[["location", "reason"]].values.tolist() == [
        ["message 1 segment 5", "unparsable segment 'obx|2|NM|2823-3^Potassium^LN||'"],
        ["message 1 segment 6", "unparsable segment 'garbage without fields'"],
        ["message 1 segment 7", "OBX-3 has no observation code"],
        ["message 1 segment 8", "'2024-03-05' is not an HL7 timestamp"]]


def test_hl7_non_numeric_nm(tmp_path):
    p = tmp_path / "nm.hl7"
    p.write_text("\n".join(oru("M1", "P1", "OBX|1|NM|2339-0^Glucose^LN||<0.1|mmol/L", "OBX|2|NM|2339-0^Glucose^LN||NaN|mmol/L",
                               "OBX|3|NM|2339-0^Glucose^LN||6.1|mmol/L")))
    df, log = read_hl7_oru(p)
    check(log, 3, 1)
    assert df.value.tolist() == [6.1]
    assert log.table().to_dict("records") == [
        {"file": str(p), "location": "message 1 segment 4", "reason": "OBX-5 '<0.1' is not a number but OBX-2 is NM"},
        {"file": str(p), "location": "message 1 segment 5", "reason": "OBX-5 'NaN' is not a finite number"}]


def test_hl7_rejected_messages(tmp_path):
    p = tmp_path / "mixed.hl7"
    lines = ["PID|1||stray", *oru("A1", "P1", type_="ADT^A01"), *oru("N1", None, "OBX|1|NM|2339-0^Glucose^LN||5.0|mmol/L"),
             *oru("G1", "P3", "OBX|1|NM|2339-0^Glucose^LN||5.0|mmol/L")]
    p.write_text("\n".join(lines))
    df, log = read_hl7_oru(p)
    check(log, 4, 1)
    assert df.message_control_id.tolist() == ["G1"]
    assert log.table()[["location", "reason"]].values.tolist() == [
        ["line 1 (before the first MSH)", "segment 'PID|1||stray' outside any message"],
        ["message 1", "message type 'ADT^A01' is not ORU^R01"],
        ["message 2", "message has no PID segment"]]


def test_hl7_file_errors(tmp_path):
    (tmp_path / "nomsh.hl7").write_text("PID|1||P1\rOBX|1|NM|2339-0^Glucose^LN||5.0\r")
    (tmp_path / "empty.hl7").write_text("")
    assert "no MSH segment" in error(read_hl7_oru, tmp_path / "nomsh.hl7")
    assert "no MSH segment" in error(read_hl7_oru, tmp_path / "empty.hl7")
    assert "does not exist" in error(read_hl7_oru, tmp_path / "missing.hl7")


def test_hl7_time():
    assert hl7_time("20240305143000") == "2024-03-05T14:30:00"
    assert hl7_time("20240305143000-0500") == "2024-03-05T14:30:00-05:00" and hl7_time("202403") == "2024-03"
    with pytest.raises(ValueError): hl7_time("20240230")   # 30 February


# ---------------------------------------------------------------- DICOM

def write_instance(path: Path, study: str, series: str, modality: str, number: int, rows: int = 4) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name, series])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.PatientID = study, series, modality, "pat-002"
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20240304", 3 if modality == "CT" else 4, number
    ds.Rows, ds.Columns, ds.PixelSpacing, ds.SliceThickness = rows, 6, [0.5, 0.6], 1.25
    ds.Manufacturer, ds.BodyPartExamined = "medwb", "CHEST"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.zeros((rows, 6), np.uint16).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_dicom_written_series_with_bad_files(tmp_path):
    study = generate_uid(entropy_srcs=["study"])
    ct, pt = generate_uid(entropy_srcs=["ct"]), generate_uid(entropy_srcs=["pt"])
    sub = tmp_path / "sub"; sub.mkdir()
    for n in (1, 2, 3): write_instance(tmp_path / f"CT{n}", study, ct, "CT", n)
    for n in (1, 2): write_instance(sub / f"PT{n}.dcm", study, pt, "PT", n)
    (tmp_path / "README.txt").write_text("not DICOM")
    (tmp_path / "cut.dcm").write_bytes((tmp_path / "CT1").read_bytes()[:200])
    (tmp_path / "zero.dcm").write_bytes(b"")
    inst, log = read_dicom_headers(tmp_path)
    check(log, 8, 5)
    assert inst.columns.tolist() == DICOM_COLUMNS
    assert {Path(d["file"]).name for d in log.dropped} == {"README.txt", "cut.dcm", "zero.dcm"}
    reasons = {Path(d["file"]).name: d["reason"] for d in log.dropped}
    assert reasons["README.txt"].startswith("InvalidDicomError") and reasons["zero.dcm"].startswith("InvalidDicomError")
    assert reasons["cut.dcm"].startswith("not an image instance")     # the header stops inside the file meta
    r = inst.set_index("path").loc[str(tmp_path / "CT2")]
    assert (r.modality, r.patient_id, r.study_date, r.series_number, r.instance_number, r.rows, r.columns) == \
           ("CT", "pat-002", "2024-03-04", 3, 2, 4, 6)
    assert (r.pixel_spacing_row, r.pixel_spacing_col, r.slice_thickness, r.manufacturer, r.body_part) == (0.5, 0.6, 1.25, "medwb", "CHEST")
    s = dicom_series_table(inst).set_index("modality")
    assert s.n_instances.to_dict() == {"CT": 3, "PT": 2} and s.loc["CT", "series_instance_uid"] == ct
    assert (s.study_instance_uid == study).all() and (s.varies == "").all() and (s.n_duplicate_sop == 0).all()
    # a list of paths, with a missing one
    inst2, log2 = read_dicom_headers([tmp_path / "CT1", tmp_path / "nope.dcm"])
    check(log2, 2, 1)
    assert log2.dropped[0]["file"] == str(tmp_path / "nope.dcm")


def test_dicom_files_shipped_with_pydicom():
    files = sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))
    assert len(files) >= 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inst, log = read_dicom_headers(files)
    check(log, len(files), len(inst))
    assert len(inst) >= 10 and inst.sop_instance_uid.notna().all() and inst.series_instance_uid.notna().all()
    no_meta = [d for d in log.dropped if Path(d["file"]).name == "no_meta.dcm"]
    assert no_meta and "InvalidDicomError" in no_meta[0]["reason"]
    mr = inst[inst.path.str.endswith("MR_small.dcm")].iloc[0]
    assert (mr.modality, mr.rows, mr.columns, mr.pixel_spacing_row) == ("MR", 64, 64, 0.3125)
    series = dicom_series_table(inst)
    assert series.n_instances.sum() == len(inst) and series.series_instance_uid.is_unique


def test_dicom_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "holds no files" in error(read_dicom_headers, tmp_path / "empty")
    assert "does not exist" in error(read_dicom_headers, tmp_path / "absent")
    with pytest.raises(MedwbError, match="no files given"): read_dicom_headers([])

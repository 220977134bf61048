"The privacy stage through the `medwb` command and the run: withdrawal → stale versions, encryption at rest, de-identification, scrubbing, pseudonyms."
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from conftest import medwb, write_settings
from medwb.core.store import read_json, verify_manifest

SMALL = {"datasets": "breast_cancer", "models": "dummy", "seeds": "0", "executor": "sequential", "n_boot": "200"}


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    k = tmp_path / "keys" / "pseudonym.key"
    k.parent.mkdir()
    k.write_text(os.urandom(32).hex()); k.chmod(0o600)
    return k


def test_withdrawal_deletes_only_that_subject_and_marks_versions_stale(tmp_path):
    s = write_settings(tmp_path, {**SMALL, "reports_dir": str(tmp_path / "reports")})
    r = medwb("run", settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    data = tmp_path / "ward.csv"
    data.write_text("record_id,patient,glucose\nwdbc-0001,P1,5.1\nwdbc-0002,P2,6.2\nwdbc-0003,P1,7.0\nwdbc-0004,P3,4.4\n")
    from medwb.privacy.consent import ConsentRegistry
    reg = ConsentRegistry(tmp_path / "consent.json")
    for p in ("P1", "P2", "P3"): reg.record(p, "given", scope=["model_training", "evaluation"], basis="form v1", date="2020-01-01")
    bad = medwb("withdraw", "P9", "--registry", str(tmp_path / "consent.json"), "--data", f"{data}:patient", settings=s)
    assert bad.returncode == 2 and "P9" in bad.stderr and data.read_text().count("\n") == 5       # unknown subject: nothing deleted
    r = medwb("withdraw", "P1", "--registry", str(tmp_path / "consent.json"), "--data", f"{data}:patient",
              "--dataset", "breast_cancer", "--reason", "patient request 2026-11-24", settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    assert data.read_text() == "record_id,patient,glucose\nwdbc-0002,P2,6.2\nwdbc-0004,P3,4.4\n"     # only P1's rows went
    assert ConsentRegistry(tmp_path / "consent.json").get("P1")["status"] == "withdrawn"
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "stale" in index and "retrain: data withdrawn" in index
    for m in (tmp_path / "reports").glob("*/*/*/manifest.json"):                              # versions themselves untouched
        assert verify_manifest(m.parent) == {"changed": [], "missing": [], "extra": [], "pruned": []}


SENSITIVE_SUFFIXES = (".csv", ".joblib", ".pt", ".npz", ".parquet", ".npy", ".pkl")


def test_encryption_at_rest_in_the_run_and_key_rotation(tmp_path):
    "Every kind of job (data, tabular, imaging) leaves its patient-level files encrypted, and its report says so."
    keys = tmp_path / "kek"; (tmp_path / "data").mkdir()
    s = write_settings(tmp_path, {**SMALL, "reports_dir": str(tmp_path / "reports"), "kek_dir": str(keys),
                                  "data_dir": str(tmp_path / "data"), "imaging": "tiny:small_cnn"},   # keys apart from the data
                       {"imaging.tiny": {"generator": "lesions", "n": "60", "seed": "0"}, "model.small_cnn": {"epochs": "1", "patience": "1"}})
    r = medwb("keys", "init", settings=s)
    assert r.returncode == 0 and "kek-0001" in r.stdout, r.stdout + r.stderr
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    r = medwb("run", settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    versions = [m.parent for m in (tmp_path / "reports").glob("*/*/*/manifest.json")]
    assert {(p.parent.parent.name, p.parent.name) for p in versions} == {("breast_cancer", "data"), ("breast_cancer", "dummy"), ("tiny", "small_cnn")}
    for p in versions:
        plain = [f.relative_to(p).as_posix() for f in p.rglob("*") if f.is_file() and f.name.endswith(SENSITIVE_SUFFIXES)]
        assert not plain, f"{p.parent.name} left patient-level files in plain text: {plain}"
        assert any(f.name.endswith(".enc") for f in p.rglob("*")), p
        assert verify_manifest(p) == {"changed": [], "missing": [], "extra": [], "pruned": []}
        facts = read_json(p / "metrics.json")["privacy"]["encryption"]
        assert facts["at_rest"] and facts["kek_id"] == "kek-0001", (p, facts)
    names = set(read_json(next(p for p in versions if p.parent.name == "small_cnn") / "manifest.json")["files"])
    assert {"predictions.csv.enc", "checkpoints/best.pt.enc"} <= names
    names = set(read_json(next(p for p in versions if p.parent.name == "data") / "manifest.json")["files"])
    assert "qc_issues.csv.enc" in names or "corrections.csv.enc" in names, names
    v = next((tmp_path / "reports" / "breast_cancer" / "dummy").glob("*/manifest.json")).parent
    names = set(read_json(v / "manifest.json")["files"])
    assert {"predictions.csv.enc", "model.joblib.enc"} <= names and not ({"predictions.csv", "model.joblib"} & names)
    assert verify_manifest(v) == {"changed": [], "missing": [], "extra": [], "pruned": []}
    m = read_json(v / "metrics.json")
    assert m["privacy"]["encryption"]["at_rest"] and m["privacy"]["encryption"]["kek_id"] == "kek-0001"
    assert "encrypted" in (v / "report.html").read_text()
    # a withdrawal counts the subject's records in the encrypted predictions (the key is at hand) and marks the versions stale
    import io
    from medwb.privacy.consent import ConsentRegistry
    from medwb.privacy.crypto import KekStore, decrypt_bytes
    pred = pd.read_csv(io.BytesIO(decrypt_bytes((v / "predictions.csv.enc").read_bytes(), KekStore(keys))), dtype=str)
    ward = tmp_path / "ward.csv"; ward.write_text(f"record_id,patient\n{pred['record_id'].iloc[0]},P1\nwdbc-9999,P2\n")
    ConsentRegistry(tmp_path / "consent.json").record("P1", "given", scope=["model_training"], basis="form v1", date="2020-01-01")
    r = medwb("withdraw", "P1", "--registry", str(tmp_path / "consent.json"), "--data", f"{ward}:patient", "--dataset", "breast_cancer", settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    marks = read_json(tmp_path / "reports" / "_stale.json")["versions"]
    assert marks[v.name]["events"][0]["records_in_predictions"] == 1, marks[v.name]
    enc = str(v / "predictions.csv.enc")
    r = medwb("keys", "status", enc, settings=s)
    assert r.returncode == 0 and "kek-0001" in r.stdout and "AES-256-GCM" in r.stdout.upper().replace("AES256", "AES-256")
    # rotation re-wraps a copy without re-encrypting it; the old key retired, the copy still decrypts
    copy = tmp_path / "pred.enc"; shutil.copy(enc, copy)
    assert medwb("keys", "rotate", settings=s).returncode == 0
    r = medwb("keys", "rewrap", str(copy), settings=s)
    assert r.returncode == 0 and "kek-0002" in r.stdout, r.stdout + r.stderr
    r = medwb("keys", "retire", "kek-0001", settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    from medwb.privacy.crypto import KekStore, decrypt_bytes
    store = KekStore(keys)
    assert decrypt_bytes(copy.read_bytes(), store).decode().startswith("record_id")
    with pytest.raises(Exception, match="kek-0001"): decrypt_bytes(Path(enc).read_bytes(), store)


def test_bad_kek_dir_is_refused_before_any_job(tmp_path):
    (tmp_path / "data").mkdir()
    missing = tmp_path / "no_such_keys"
    s = write_settings(tmp_path, {**SMALL, "reports_dir": str(tmp_path / "reports"), "kek_dir": str(missing), "data_dir": str(tmp_path / "data")})
    r = medwb("run", settings=s)
    assert r.returncode == 2 and str(missing) in r.stderr and "does not exist" in r.stderr, r.stdout + r.stderr
    assert not list((tmp_path / "reports").glob("*/*/*")), "a job ran"
    keys = tmp_path / "kek"
    assert medwb("keys", "init", "--kek-dir", str(keys), settings=s).returncode == 0
    keys.chmod(0o755)
    s = write_settings(tmp_path, {**SMALL, "reports_dir": str(tmp_path / "reports"), "kek_dir": str(keys), "data_dir": str(tmp_path / "data")})
    r = medwb("run", settings=s)
    assert r.returncode == 2 and str(keys) in r.stderr and "readable by others" in r.stderr, r.stdout + r.stderr
    assert not list((tmp_path / "reports").glob("*/*/*")), "a job ran"
    from medwb.privacy.crypto import KekStore
    inside = tmp_path / "data" / "keys"; KekStore(inside, create=True)            # keys inside the data folder
    s = write_settings(tmp_path, {**SMALL, "reports_dir": str(tmp_path / "reports"), "kek_dir": str(inside), "data_dir": str(tmp_path / "data")})
    r = medwb("run", settings=s)
    assert r.returncode == 2 and "inside the data folder" in r.stderr, r.stdout + r.stderr
    assert not list((tmp_path / "reports").glob("*/*/*")), "a job ran"


def test_deid_scrub_and_pseudonymise_commands(tmp_path, key_file):
    (tmp_path / "data").mkdir()
    s = write_settings(tmp_path, {**SMALL, "reports_dir": str(tmp_path / "reports"), "data_dir": str(tmp_path / "data")})
    src = tmp_path / "dicom"; src.mkdir()
    shutil.copy(Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm", src / "a.dcm")
    (src / "broken.dcm").write_bytes(b"not a dicom file")
    r = medwb("deid", str(src), str(tmp_path / "out"), "--key-file", str(key_file), settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    outs = list((tmp_path / "out").rglob("*.dcm"))
    assert len(outs) == 1 and "unparsable" in r.stdout
    ds = pydicom.dcmread(outs[0])
    assert ds.PatientIdentityRemoved == "YES" and "CompressedSamples" not in str(ds.PatientName)
    note = tmp_path / "note.txt"
    note.write_text("患者王小明，身份证号11010519491231002X，电话13812345678，于2023年5月1日入住北京协和医院。", encoding="utf-8")
    r = medwb("scrub", str(note), settings=s)
    assert r.returncode == 0 and "11010519491231002X" not in r.stdout and "13812345678" not in r.stdout and "[ID]" in r.stdout
    csv = tmp_path / "people.csv"; csv.write_text("name,phone,glucose\n王伟,13800138000,5.1\n李娜,13912345678,7.3\n", encoding="utf-8")
    r = medwb("pseudonymise", str(csv), str(tmp_path / "pseudo.csv"), "--columns", "name,phone",
              "--mapping", str(tmp_path / "keys" / "map.json"), "--key-file", str(key_file), settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    out = pd.read_csv(tmp_path / "pseudo.csv", dtype=str)
    assert out["name"].str.startswith("P-").all() and "13800138000" not in (tmp_path / "pseudo.csv").read_text()
    assert key_file.read_text() not in r.stdout + r.stderr + (tmp_path / "keys" / "map.json").read_text()


def test_text_and_key_commands_need_no_settings(tmp_path):
    "`scrub` (file or stdin) and `keys pseudonym-key` work in an empty folder; bad input is refused and writes nothing."
    import subprocess
    from conftest import MEDWB
    env = {k: v for k, v in os.environ.items() if k != "MEDWB_SETTINGS"}
    run = lambda *a, input=None: subprocess.run([MEDWB, *a], cwd=tmp_path, env=env, capture_output=True, input=input, timeout=300)
    note = "姓名：赵立新，身份证 430102199003071236。术者：赵立新、孙悦。Lucía Fernández-García works at Boeing in Seattle.\n"
    (tmp_path / "note.txt").write_text(note, encoding="utf-8")
    secrets = ("赵立新", "孙悦", "430102199003071236", "Lucía", "Fernández-García", "Boeing", "Seattle")
    for r in (run("scrub", "note.txt"), run("scrub", "-", input=note.encode("utf-8"))):
        out = r.stdout.decode("utf-8")
        assert r.returncode == 0, r.stderr.decode()
        assert not any(s in out for s in secrets), out
        assert out.startswith("姓名：[PERSON]，身份证 [ID]") and "PHI span(s) replaced" in r.stderr.decode()
    r = run("keys", "pseudonym-key", "k.key")
    assert r.returncode == 0 and stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600, r.stderr.decode()
    assert run("keys", "pseudonym-key", "k.key").returncode == 2                     # never over an existing key
    r = run("scrub", "note.txt", "--mode", "pseudonym", "--key-file", "k.key", "--out", "pseudo.txt")
    assert r.returncode == 0 and "[PERSON-" in (tmp_path / "pseudo.txt").read_text(encoding="utf-8")
    (tmp_path / "bin.dat").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (tmp_path / "mixed.txt").write_bytes("患者姓名".encode("utf-8") + "王小明电话".encode("gbk"))
    for args, msg in ((("bin.dat",), "looks binary"), (("mixed.txt",), "mixes encodings"), (("note.txt", "--keep", "NAME"), "unknown PHI type"),
                      (("note.txt", "--max-bytes", "10"), "over the limit"), (("missing.txt",), "does not exist")):
        r = run("scrub", *args, "--out", "clean.txt")
        assert r.returncode == 2 and msg in r.stderr.decode(), (args, r.stderr.decode())
        assert not (tmp_path / "clean.txt").exists()                                  # nothing partial where a clean file was expected
    (tmp_path / "bar.txt").write_text("标本 123456789012345678 已送检", encoding="utf-8")
    r = run("scrub", "bar.txt", "--lenient")
    assert "123456789012345678" in r.stdout.decode() and "possible identifier left in place" in r.stderr.decode()
    assert "[ID]" in run("scrub", "bar.txt").stdout.decode()                          # strict by default
    r = run("run")
    assert r.returncode == 2 and "no settings.ini" in r.stderr.decode()               # commands that need settings still say so

"""Encryption at rest (clauses 5.1.1.3, 5.4.1.1, 5.4.2.2, 5.4.2.4) and consent (clauses 5.4.1.5-6): tampering,
wrong and retired keys, rotation without re-encryption, nonce uniqueness, keys kept out of logs; consent refusal,
withdrawal deleting only the subject's rows, the deletion log, stale model versions, and bad input changing nothing."""
from __future__ import annotations

import base64
import json
import logging
import os
import stat
import struct

import numpy as np
import pandas as pd
import pytest

from medwb.core.store import STALE_FILE, mark_stale, stale_versions
from medwb.privacy.consent import ConsentRegistry, deletion_log
from medwb.core.settings import MedwbError
from medwb.core.hashing import canonical_json
from medwb.core.store import read_json, verify_manifest, write_manifest
from medwb.core.io import write_json
from medwb.privacy.crypto import KekStore, decrypt_bytes, decrypt_file, encrypt_bytes, encrypt_dataset_file, encrypt_file, encrypt_sensitive, encryption_status, read_header, rewrap, sensitive_artifacts


# --- crypto -----------------------------------------------------------------------------------------------

@pytest.fixture
def dirs(tmp_path):
    data, keys = tmp_path / "data", tmp_path / "keys"
    data.mkdir()
    return data, KekStore(keys, data_dir=data, create=True)


def body(path_or_blob) -> bytes:
    b = path_or_blob if isinstance(path_or_blob, bytes) else path_or_blob.read_bytes()
    return b[13 + struct.unpack(">I", b[9:13])[0]:]


def no_temp(folder) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


@pytest.mark.parametrize("size,chunk", [(0, 64), (1, 64), (64, 64), (256, 64), (1000, 64), (5000, 1 << 20)])
def test_round_trip_and_body_size(dirs, size, chunk):
    data, store = dirs
    src = data / "x.bin"; src.write_bytes(os.urandom(size))
    enc = encrypt_file(src, None, store, aad="ds", chunk_size=chunk)
    assert len(body(enc)) == size + 16 * max(1, -(-size // chunk))
    out = decrypt_file(enc, data / "y.bin", store, aad="ds")
    assert out.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_every_byte_of_a_file_is_authenticated(dirs):
    data, store = dirs
    src = data / "r.csv"; src.write_bytes(b"record_id,subject\n" + b"r1,s1\n" * 20)
    enc = encrypt_file(src, None, store, chunk_size=32)
    raw = enc.read_bytes()
    bad, out = data / "bad.enc", data / "out.csv"
    for i in range(len(raw)):
        t = bytearray(raw); t[i] ^= 0x40; bad.write_bytes(bytes(t))
        with pytest.raises(MedwbError, match="authentication failed"):
            decrypt_file(bad, out, store)
        assert not out.exists()
    assert no_temp(data)


def test_truncation_extension_reordering_and_swapped_key_parts(dirs):
    data, store = dirs
    blob = encrypt_bytes(os.urandom(100), store, chunk_size=25)        # four 41-byte chunks
    b, head = body(blob), blob[:len(blob) - len(body(blob))]
    c = [b[i:i + 41] for i in range(0, len(b), 41)]
    assert len(c) == 4 and all(len(x) == 41 for x in c)
    for variant in (blob[:-41], blob[:-1], blob + b"\0", blob + c[-1], head + c[1] + c[0] + c[2] + c[3], head + c[0] + c[1] + c[3]):
        with pytest.raises(MedwbError, match="authentication failed"):
            decrypt_bytes(variant, store)
    # the wrapped key of one file does not open another (its AAD binds the file id)
    other = encrypt_bytes(os.urandom(100), store, chunk_size=25)
    n = struct.unpack(">I", blob[9:13])[0]
    h1, h2 = json.loads(blob[13:13 + n]), json.loads(other[13:13 + struct.unpack(">I", other[9:13])[0]])
    mixed = canonical_json({"data": h1["data"], "key": h2["key"]}).encode()
    forged = blob[:9] + struct.pack(">I", len(mixed)) + mixed + b
    with pytest.raises(MedwbError, match="data key cannot be unwrapped"):
        decrypt_bytes(forged, store)
    # a header with an extra field, or re-serialised with spaces, is refused although the JSON means the same
    for hdr in (json.dumps(h1).encode(), canonical_json({**h1, "note": "x"}).encode()):
        with pytest.raises(MedwbError, match="authentication failed"):
            decrypt_bytes(blob[:9] + struct.pack(">I", len(hdr)) + hdr + b, store)
    with pytest.raises(MedwbError, match="authentication failed"):
        decrypt_bytes(blob, store, aad="other dataset")


def test_wrong_kek_decrypts_nothing(dirs, tmp_path):
    data, store = dirs
    src = data / "r.csv"; src.write_text("a,b\n1,2\n")
    enc = encrypt_file(src, None, store)
    other = KekStore(tmp_path / "other_keys", create=True)     # same id 'kek-0001', different key
    assert other.current == store.current
    with pytest.raises(MedwbError, match="authentication failed.*'kek-0001'"):
        decrypt_file(enc, data / "out.csv", other)
    assert not (data / "out.csv").exists() and no_temp(data)
    # a header naming a KEK the store does not hold, or a path as a KEK id
    raw = enc.read_bytes().replace(b'"kek_id":"kek-0001"', b'"kek_id":"kek-0009"')
    with pytest.raises(MedwbError, match="names KEK 'kek-0009', which is not in the key folder"):
        decrypt_bytes(raw, store)
    raw = enc.read_bytes().replace(b'"kek_id":"kek-0001"', b'"kek_id":"../../x.kek"')
    with pytest.raises(MedwbError, match="authentication failed"):
        decrypt_bytes(raw, store)


def test_nonces_and_data_keys_never_repeat(dirs):
    from medwb.privacy.crypto import _parse_header, _unwrap
    _, store = dirs
    plain = b"identical plaintext " * 10
    seen = {k: set() for k in ("dek", "file_id", "nonce_prefix", "wrap_nonce", "body")}
    for _ in range(2000):
        b = encrypt_bytes(plain, store)
        n = struct.unpack(">I", b[9:13])[0]
        h = _parse_header(b[:13], b[13:13 + n], "blob")
        seen["dek"].add(_unwrap(store, h, "blob")); seen["body"].add(b[13 + n:])
        seen["file_id"].add(h["data"]["file_id"]); seen["nonce_prefix"].add(h["data"]["nonce_prefix"])
        seen["wrap_nonce"].add(h["key"]["wrap_nonce"])
    assert {k: len(v) for k, v in seen.items()} == dict.fromkeys(seen, 2000)


def test_rotation_rewraps_without_reencrypting_and_retirement_destroys(dirs, tmp_path):
    data, store = dirs
    files, plains = [], {}
    for i in range(3):
        src = data / f"p{i}.csv"; src.write_bytes(os.urandom(3000))
        files.append(encrypt_file(src, None, store, chunk_size=1000)); plains[files[-1]] = src.read_bytes()
    stay = encrypt_file(data / "p0.csv", data / "stay.enc", store)
    before = {f: f.read_bytes() for f in files}
    assert store.rotate() == "kek-0002"
    table = rewrap(files, store)
    assert table.status.tolist() == ["rewrapped"] * 3 and set(table.old_kek) == {"kek-0001"}
    for f in files:
        assert body(f) == body(before[f])                      # ciphertext body bytes unchanged
        h0n = struct.unpack(">I", before[f][9:13])[0]
        h0 = json.loads(before[f][13:13 + h0n]); h1 = read_header(f)
        assert h1["data"] == h0["data"] and h1["key"]["kek_id"] == "kek-0002" and h1["key"] != h0["key"]
        assert decrypt_bytes(f.read_bytes(), store) == plains[f]
    with pytest.raises(MedwbError, match="is current"):
        store.retire("kek-0002")
    with pytest.raises(MedwbError, match="still wraps the data key of 1 file"):
        store.retire("kek-0001", check=[*files, stay])
    old = (store.folder / "kek-0001.kek").read_bytes()
    store.retire("kek-0001")
    assert not (store.folder / "kek-0001.kek").exists() and "kek-0001" in store.retired()
    assert old.hex() not in (store.folder / "retired.json").read_text()
    for f in files: assert decrypt_bytes(f.read_bytes(), store) == plains[f]
    with pytest.raises(MedwbError, match="KEK 'kek-0001', which was retired"):
        decrypt_file(stay, data / "stay.csv", store)
    assert not (data / "stay.csv").exists()
    with pytest.raises(MedwbError, match="retired"):
        rewrap([stay], store)
    assert store.rotate() == "kek-0003"                        # retired ids are not reused


def test_rewrap_opens_every_key_before_changing_anything(dirs, tmp_path):
    data, store = dirs
    a = encrypt_file(_write(data / "a.csv", b"a"), None, store)
    foreign = KekStore(tmp_path / "k2", create=True); foreign.rotate(); foreign.rotate()
    b = encrypt_file(_write(data / "b.csv", b"b"), None, foreign)                  # wrapped with kek-0003 elsewhere
    store.rotate()
    before = a.read_bytes()
    with pytest.raises(MedwbError, match="kek-0003"):
        rewrap([a, b], store)
    assert a.read_bytes() == before


def _write(p, b):
    p.write_bytes(b); return p


def test_keys_never_in_logs_reprs_errors_or_files(dirs, caplog, tmp_path):
    data, store = dirs
    caplog.set_level(logging.DEBUG, logger="medwb.privacy.crypto")
    src = _write(data / "r.csv", b"x,y\n1,2\n")
    enc = encrypt_file(src, None, store)
    store.rotate(); rewrap([enc], store)
    keys = [(store.folder / f"{i}.kek").read_bytes() for i in store.ids()]
    errors = []
    for f in (lambda: decrypt_bytes(enc.read_bytes(), KekStore(tmp_path / "k2", create=True)),
              lambda: store.retire("kek-0002"), lambda: decrypt_bytes(enc.read_bytes()[:-1], store)):
        with pytest.raises(MedwbError) as e: f()
        errors.append(str(e.value))
    store.retire("kek-0001")
    text = "\n".join([*caplog.messages, *errors, repr(store), str(store), enc.read_bytes().decode("latin-1"),
                      (store.folder / "retired.json").read_text(), (store.folder / "current").read_text()])
    assert len(caplog.messages) >= 4 and "kek-0001" in text
    for k in keys:
        for form in (k.hex(), base64.b64encode(k).decode(), k.decode("latin-1"), repr(k)):
            assert form not in text
    assert not any(isinstance(v, bytes) for v in vars(store).values())


def test_key_store_rules(tmp_path):
    data = tmp_path / "data"; data.mkdir()
    with pytest.raises(MedwbError, match="inside the data folder"):
        KekStore(data / "keys", data_dir=data, create=True)
    with pytest.raises(MedwbError, match="inside the key folder"):
        KekStore(tmp_path, data_dir=data, create=True)
    with pytest.raises(MedwbError, match="does not exist"):
        KekStore(tmp_path / "none")
    store = KekStore(tmp_path / "keys", data_dir=data, create=True)
    f = store.folder / "kek-0001.kek"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600 and stat.S_IMODE(store.folder.stat().st_mode) == 0o700
    os.chmod(f, 0o640)
    with pytest.raises(MedwbError, match="chmod 600"):
        encrypt_bytes(b"x", store)
    os.chmod(f, 0o600)
    src = _write(data / "a.csv", b"a")
    enc = encrypt_file(src, None, store)
    before = enc.read_bytes()
    with pytest.raises(MedwbError, match="refusing to overwrite"):
        encrypt_file(src, None, store)
    assert enc.read_bytes() == before
    with pytest.raises(MedwbError, match="inside the key folder"):
        encrypt_file(src, store.folder / "a.enc", store)
    with pytest.raises(MedwbError, match="does not exist"):
        encrypt_file(data / "missing.csv", None, store)


def test_environment_override(tmp_path, monkeypatch):
    key = os.urandom(32)
    monkeypatch.setenv("MEDWB_KEK", "kek-vault-7:" + base64.b64encode(key).decode())
    store = KekStore(tmp_path / "keys", create=True)
    assert store.current == "kek-vault-7" and not list(store.folder.iterdir())
    blob = encrypt_bytes(b"secret", store)
    assert decrypt_bytes(blob, store) == b"secret" and base64.b64encode(key).decode() not in repr(store)
    with pytest.raises(MedwbError, match="secret manager"):
        store.rotate()
    monkeypatch.setenv("MEDWB_KEK", "kek-vault-7:bm90IGEga2V5")
    with pytest.raises(MedwbError, match="32-byte key") as e:
        store.current
    assert "bm90IGEga2V5" not in str(e.value)


def test_sensitive_artifacts_and_status(dirs, tmp_path):
    _, store = dirs
    v = tmp_path / "version"; (v / "figures").mkdir(parents=True)
    _write(v / "predictions.csv", b"record_id,score\nr1,0.2\n"); _write(v / "model.joblib", os.urandom(100))
    _write(v / "metrics.json", b"{}"); _write(v / "figures" / "roc.png", b"png"); _write(v / ".hidden.csv", b"h")
    assert [p.name for p in sensitive_artifacts(v)] == ["model.joblib", "predictions.csv"]
    t = encrypt_sensitive(v, store)
    assert t.status.tolist() == ["encrypted", "encrypted"] and set(t.kek_id) == {"kek-0001"}
    assert (v / "predictions.csv").exists()                     # plaintext kept unless asked
    assert encrypt_sensitive(v, store).status.tolist() == ["already encrypted"] * 2
    assert encryption_status(v / "predictions.csv.enc") == {"path": str(v / "predictions.csv.enc"), "encrypted": True,
                                                            "kek_id": "kek-0001", "algorithm": "AES-256-GCM"}
    assert encryption_status(v / "predictions.csv")["encrypted"] is False
    out = encrypt_dataset_file(v / "figures" / "roc.png", store, remove_plaintext=True)
    assert not (v / "figures" / "roc.png").exists() and decrypt_bytes(out.read_bytes(), store) == b"png"
    with pytest.raises(MedwbError, match="does not exist"):
        encryption_status(v / "nothing.csv")


# --- consent ----------------------------------------------------------------------------------------------

@pytest.fixture
def reg(tmp_path):
    r = ConsentRegistry(tmp_path / "consent.json")
    r.record("s1", "given", ["model_training", "evaluation"], basis="form v2", date="2024-01-02")
    r.record("s2", "given", ["evaluation"], basis="form v2", date="2024-01-03")
    r.record("s3", "refused", date="2024-01-04")
    r.record("s4", "given", ["model_training"], basis="form v1", date="2023-05-01")
    r.record("s4", "withdrawn", date="2024-02-01")
    return r


def test_registry_validation_and_audit(reg, tmp_path):
    assert len(reg) == 4 and "s4" in reg and reg.get("s4")["withdrawn"] == "2024-02-01"
    for args, msg in [(("s5", "given", []), "needs a scope"), (("s5", "given", ["training"]), "unknown purpose"),
                      (("s5", "maybe"), "consent status 'maybe'"), (("", "refused"), "is empty")]:
        with pytest.raises(MedwbError, match=msg):
            reg.record(*args, basis="b")
    with pytest.raises(MedwbError, match="not an ISO date"):
        reg.record("s5", "refused", date="1/2/2024")
    assert "s5" not in reg and "s5" not in ConsentRegistry(reg.path)
    audit = [json.loads(l) for l in reg.audit_log.read_text().splitlines()]
    assert [a["subject"] for a in audit] == ["s1", "s2", "s3", "s4", "s4"]
    assert audit[-1]["before"]["status"] == "given" and audit[-1]["after"]["status"] == "withdrawn"
    (tmp_path / "bad.json").write_text('{"format": "medwb-consent-1", "subjects": {"x": {"status": "ok"}}}')
    with pytest.raises(MedwbError, match="status 'ok'"):
        ConsentRegistry(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text("[1, 2]")
    with pytest.raises(MedwbError, match="not a medwb consent registry"):
        ConsentRegistry(tmp_path / "bad2.json")


def test_pipeline_refuses_records_outside_consent(reg):
    f = pd.DataFrame({"rid": range(8), "subj": ["s1", "s1", "s2", "s3", "s4", "s8", np.nan, "s1"]})
    allowed, refused = res = reg.check(f, "subj", "model_training")
    assert allowed.rid.tolist() == [0, 1, 7]
    assert refused.set_index("subject").reason.to_dict() == {
        "": "no subject id", "s2": "consent does not cover model_training", "s3": "consent refused",
        "s4": "consent withdrawn", "s8": "unknown subject"}
    assert res.counts["rows"] == 8 and res.counts["refused"] == 5 and res.counts["subjects_refused"] == 5
    assert reg.check(f, "subj", "evaluation").allowed.rid.tolist() == [0, 1, 2, 7]
    with pytest.raises(MedwbError, match="5 of 8 record.*refused"):
        reg.check(f, "subj", "model_training", strict=True)
    only_s1 = f[f.subj == "s1"]
    assert reg.check(only_s1, "subj", "model_training", strict=True).allowed.equals(only_s1)
    with pytest.raises(MedwbError, match="unknown purpose 'training'"):
        reg.check(f, "subj", "training")
    with pytest.raises(MedwbError, match="no subject column 'patient'"):
        reg.check(f, "patient", "evaluation")


def _reports(root, versions):
    for ds, model, vid, created, ids in versions:
        d = root / ds / model / vid; d.mkdir(parents=True)
        pd.DataFrame({"record_id": ids, "part": "test", "score": 0.5}).to_csv(d / "predictions.csv", index=False)
        write_manifest(d, version_id=vid, dataset=ds, model=model, seed=0, status="ok", created=created)
    return root


@pytest.fixture
def world(reg, tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    subj = rng.choice(["s1", "s2", "s4", "s10", "s11"], n)
    frame = pd.DataFrame({"record_id": [f"r{i:04d}" for i in range(n)], "subject": subj,
                          "glucose": [f"{x:.{d}f}" for x, d in zip(rng.normal(5.5, 1, n), rng.integers(0, 6, n))],
                          "note": rng.choice(["", "fasting, morning", 'said "ok"', "two\nlines", "中文"], n)})
    data = tmp_path / "data"; data.mkdir()
    frame.to_csv(data / "records.csv", index=False)
    (data / "labs.csv").write_text("pid,value\n" + "".join(f"{s},{i}\n" for i, s in enumerate(subj[:50])))
    mapping = tmp_path / "mapping.json"; write_json(mapping, {"P1": "s1", "P2": "s2", "P3": "s1"})
    reports = _reports(tmp_path / "reports", [("demo", "linear", "v1", "2024-01-01T00:00:00+00:00", ["r0000", "r0001"]),
                                              ("demo", "svm", "v2", "2024-02-01T00:00:00+00:00", ["r0399"]),
                                              ("other", "linear", "v3", "2024-02-01T00:00:00+00:00", ["r0000"])])
    return frame, data, mapping, reports


def test_withdrawal_deletes_only_that_subject(reg, world):
    frame, data, mapping, reports = world
    rec, labs = data / "records.csv", data / "labs.csv"
    raw_rec, raw_labs = rec.read_bytes(), labs.read_bytes()
    entry = reg.withdraw("s1", [(rec, "subject"), (labs, "pid")], mapping_table=mapping, reports_dir=reports,
                         dataset="demo", reason="letter of 2024-06-01")
    kept = frame[frame.subject != "s1"]
    n1 = int((frame.subject == "s1").sum())
    assert n1 > 0 and entry["files"][str(rec)] == n1 and entry["rows_deleted"] == n1 + int((frame.subject[:50] == "s1").sum())
    # the remaining file is the original with exactly the subject's records removed, byte for byte
    assert rec.read_bytes() == kept.to_csv(index=False).encode()
    assert raw_rec.startswith(rec.read_bytes()[:20]) and len(rec.read_bytes()) < len(raw_rec)
    pd.testing.assert_frame_equal(pd.read_csv(rec, keep_default_na=False, dtype=str),
                                  pd.read_csv(pd.io.common.BytesIO(raw_rec), keep_default_na=False, dtype=str)
                                  .query("subject != 's1'").reset_index(drop=True))
    assert labs.read_bytes() == b"".join(l for l in raw_labs.splitlines(keepends=True) if not l.startswith(b"s1,"))
    assert json.loads(mapping.read_text()) == {"P2": "s2"} and entry["mapping_entries_removed"] == 2
    assert reg.get("s1")["status"] == "withdrawn" and not reg.allows("s1", "evaluation")
    log = deletion_log(reg)
    assert log.subject.tolist() == ["s1"] and log.reason[0] == "letter of 2024-06-01" and log.stale_versions[0] == ["v1", "v2"]


def test_stale_marks_live_outside_the_immutable_versions(reg, world):
    frame, data, mapping, reports = world
    reg.withdraw("s1", [data / "records.csv"], subject_column="subject", reports_dir=reports, dataset="demo")
    sv = stale_versions(reports)
    assert set(sv) == {"v1", "v2"} and "consent withdrawn" in sv["v1"]
    for d in reports.glob("*/*/*"):
        assert verify_manifest(d) == {"changed": [], "missing": [], "extra": [], "pruned": []} and not (d / "stale.json").exists()
    st = read_json(reports / STALE_FILE)
    s1_records = set(frame.record_id[frame.subject == "s1"])
    assert st["versions"]["v1"]["events"][0]["records_in_predictions"] == len(s1_records & {"r0000", "r0001"})
    assert '"s1"' not in (reports / STALE_FILE).read_text()
    assert not any(r in (reports / STALE_FILE).read_text() for r in s1_records)   # no record or subject ids published
    # a version retrained after the withdrawal is not stale; a later withdrawal marks it
    _reports(reports, [("demo", "linear", "v4", "2024-07-01T00:00:00+00:00", ["r0002"])])
    assert "v4" not in stale_versions(reports)
    assert mark_stale(reports, "demo", ["s2"], reason="second withdrawal") == ["v1", "v2", "v4"]
    assert len(read_json(reports / STALE_FILE)["versions"]["v1"]["events"]) == 2
    with pytest.raises(MedwbError, match="does not exist"):
        mark_stale(reports / "nope", "demo", ["s2"])


def test_bad_withdrawals_change_nothing(reg, world):
    frame, data, mapping, reports = world
    files = [data / "records.csv", data / "labs.csv", mapping]
    before = {p: p.read_bytes() for p in files}
    cases = [(("s99", [(data / "records.csv", "subject")]), {}, "'s99' is not in the consent registry"),
             (("s1", [(data / "records.csv", "subject"), (data / "labs.csv", "subject")]), {}, "no subject column 'subject'"),
             (("s1", [(data / "records.csv", "subject"), (data / "gone.csv", "subject")]), {}, "does not exist"),
             (("s1", [(data / "records.csv", "subject")]), {"reports_dir": reports}, "needs dataset="),
             (("s1", [(data / "records.csv", "subject")]), {"mapping_table": data / "labs.csv"}, "not valid JSON")]
    write_json(data / "list.json", ["P1", "s1"])
    write_json(data / "enc.json", {"format": "medwb-mapping-table/1", "entries": {}})
    cases.append((("s1", [(data / "records.csv", "subject")]), {"mapping_table": data / "enc.json"}, "pass the loaded table object"))
    cases.append((("s1", [(data / "records.csv", "subject")]), {"mapping_table": data / "list.json"}, "not a pseudonym mapping table"))
    for args, kw, msg in cases:
        with pytest.raises(MedwbError, match=msg):
            reg.withdraw(*args, **kw)
        assert {p: p.read_bytes() for p in files} == before, msg
    assert reg.get("s1")["status"] == "given" and not reg.deletion_log.exists() and not (reports / STALE_FILE).exists()
    assert no_temp(data)


def test_mapping_table_object_is_used(reg, world):
    frame, data, mapping, reports = world

    class MappingTable:                      # a table object: remove(subject) -> entries removed, then save()
        def __init__(self, path): self.removed, self.saved, self.path = [], 0, path
        def remove(self, subject): self.removed.append(subject); return 3
        def save(self): self.saved += 1
    m = MappingTable(data / "m.json")
    e = reg.withdraw("s2", [(data / "labs.csv", "pid")], mapping_table=m)
    assert m.removed == ["s2"] and m.saved == 1 and e["mapping_entries_removed"] == 3 and e["mapping_table"] == "MappingTable"
    assert b"\ns2," not in (data / "labs.csv").read_bytes() and e["stale_versions"] == []

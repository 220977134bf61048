"""Privacy (clause 5.4.1.3-4): keyed pseudonyms, the key store, the encrypted mapping table, resident ID
check digits, generalisation, k-anonymity / l-diversity / t-closeness and release.

The dictionary attack is run here with the attacker written independently of medwb (hashlib and hmac
only): it must recover every bare SHA-256 control value and none of medwb's keyed pseudonyms.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pickle
import stat
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import write_settings
from medwb.core.settings import MedwbError
from medwb.privacy.pseudonyms import KEY_ENV, KeyStore, MappingTable, dictionary_attack, generate_key_file, pseudonymise, pseudonymise_frame
from medwb.privacy.anonymity import AgeBand, Band, RareToOther, Truncate, generalise, k_anonymity, l_diversity, privacy_summary, release, t_closeness
from medwb.privacy.identifiers import resident_id_check_digit, synthetic_mobile_numbers, synthetic_resident_ids, valid_resident_id


def refused(fn, *args, **kw) -> str:
    "The MedwbError message of fn(*args, **kw)."
    with pytest.raises(MedwbError) as e: fn(*args, **kw)
    return str(e.value)


# ---------------------------------------------------------------- dictionary attack

def test_dictionary_attack_recovers_bare_sha256_and_no_keyed_pseudonym():
    t0 = time.perf_counter()
    phones, rids = synthetic_mobile_numbers(100_000, seed=7), synthetic_resident_ids(100_000, seed=7)
    assert len(set(phones)) == len(set(rids)) == 100_000
    assert all(len(p) == 11 and p.isdigit() and p[0] == "1" and p[1] in "3456789" for p in phones)
    assert all(len(r) == 18 for r in rids) and valid_resident_id(rids).all()
    candidates = phones + rids                                  # the attacker's whole candidate space
    rng = np.random.default_rng(3)
    targets = {"phone": [str(x) for x in rng.choice(phones, 1000, replace=False)],
               "resident_id": [str(x) for x in rng.choice(rids, 1000, replace=False)]}
    key, wrong = KeyStore(os.urandom(32)), os.urandom(32)

    # the attacker's precomputed dictionaries: bare SHA-256, and HMAC under a guessed key, per domain
    sha = {hashlib.sha256(c.encode()).hexdigest(): c for c in candidates}
    counts = {}
    for domain, values in targets.items():
        control = [hashlib.sha256(v.encode()).hexdigest() for v in values]
        ours = pseudonymise(values, key, domain)
        assert len(set(ours)) == 1000 and all(t.startswith("P-") and len(t) == 28 for t in ours)
        guessed = set(pseudonymise(candidates, wrong, domain))      # the attacker knows the algorithm, not the key
        counts[domain] = {
            "control recovered": sum(sha.get(h) == v for h, v in zip(control, values)),
            "medwb recovered by SHA-256": sum(t in sha for t in ours) + sum(t[2:] in sha for t in ours),
            "medwb recovered by HMAC, wrong key": sum(t in guessed for t in ours)}
        # with the real key the same enumeration recovers everything: the key is what protects
        own = phones if domain == "phone" else rids
        real = dict(zip(pseudonymise(own, key, domain), own))
        assert [real[t] for t in ours] == values
        # the library's attack harness agrees with the independent attacker (on a smaller candidate list)
        sha_hex = lambda vs: [hashlib.sha256(v.encode()).hexdigest() for v in vs]
        few = values[:100] + own[:5000]
        assert dictionary_attack(control[:100], few, sha_hex, values[:100])["n_correct"] == 100
        assert dictionary_attack(ours[:100], few, sha_hex)["n_recovered"] == 0
    seconds = time.perf_counter() - t0
    print(counts, f"{seconds:.1f} s")
    for c in counts.values():
        assert c == {"control recovered": 1000, "medwb recovered by SHA-256": 0, "medwb recovered by HMAC, wrong key": 0}


# ---------------------------------------------------------------- pseudonyms

def test_pseudonyms_are_the_documented_hmac_stable_and_separated():
    k1, k2 = os.urandom(32), os.urandom(32)
    mac = hmac.new(k1, b"patient_id\x00" + "A-001".encode(), hashlib.sha256).digest()[:16]
    assert pseudonymise("A-001", k1) == "P-" + base64.b32encode(mac).decode().rstrip("=")
    assert pseudonymise("A-001", k1) == pseudonymise(" A-001 ", KeyStore(k1))                  # stable, canonical
    assert pseudonymise("A-001", k2) != pseudonymise("A-001", k1)                              # another key
    assert pseudonymise("A-001", k1, "phone") != pseudonymise("A-001", k1, "patient_id")      # another domain
    assert pseudonymise(13800138000, k1, "phone") == pseudonymise(13800138000.0, k1, "phone") == pseudonymise("13800138000", k1, "phone")
    s = pd.Series(["x", None, "y", "x"], index=[5, 6, 7, 8], name="pid")
    out = pseudonymise(s, k1)
    assert out.index.tolist() == [5, 6, 7, 8] and out.name == "pid" and pd.isna(out[6])
    assert out[5] == out[8] == pseudonymise("x", k1) and out[7] == pseudonymise("y", k1) != out[5]
    many = pseudonymise([str(i) for i in range(50_000)], k1)
    assert len(set(many)) == 50_000
    assert "is 16 bytes" in refused(pseudonymise, "x", os.urandom(16))
    assert "domain" in refused(pseudonymise, "x", k1, "")


# ---------------------------------------------------------------- key store

@pytest.fixture
def no_key_env(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    return monkeypatch


def test_key_from_env_and_every_refusal(no_key_env):
    secret = os.urandom(32)
    messages = [refused(KeyStore.from_env)]
    assert "is not set" in messages[0]
    for value, expect in [(secret.hex()[:62], "31-byte key"), (secret[:16].hex(), "16-byte key"),
                          (secret.hex()[:-1] + "g", "malformed hex"), (secret.hex()[:-1], "odd number"),
                          ("base64:" + base64.b64encode(secret[:20]).decode(), "20-byte key"), ("base64:%%%", "not valid base64"),
                          ("   ", "is empty")]:
        no_key_env.setenv(KEY_ENV, value)
        messages.append(refused(KeyStore.from_env))
        assert expect in messages[-1] and KEY_ENV in messages[-1]
    assert all(secret.hex()[:20] not in m and secret.hex()[-20:] not in m for m in messages)
    no_key_env.setenv(KEY_ENV, secret.hex().upper())
    assert KeyStore.from_env()._key == secret and KeyStore.load()._key == secret
    no_key_env.setenv(KEY_ENV, "base64:" + base64.b64encode(secret).decode())
    store = KeyStore.from_env()
    assert store._key == secret and store.source == f"env:{KEY_ENV}"
    for text in (repr(store), str(store), f"{store}", repr([store])):
        assert secret.hex() not in text and base64.b64encode(secret).decode() not in text and store.key_id in text
    assert "never pickled" in refused(pickle.dumps, store)


def test_key_file_generation_permissions_and_data_dirs(tmp_path, no_key_env):
    data, secrets = tmp_path / "data", tmp_path / "secrets"
    data.mkdir()
    kf = generate_key_file(secrets / "k.key", data_dirs=[data])
    text = kf.read_text()
    assert stat.S_IMODE(kf.stat().st_mode) == 0o600 and len(text.strip()) == 64 and not list(secrets.glob(".*tmp"))
    store = KeyStore.from_file(kf, data_dirs=[data])
    assert store._key == bytes.fromhex(text) and store.source == f"file:{kf}"
    assert text.strip() not in repr(store)
    assert "already exists" in refused(generate_key_file, kf) and kf.read_text() == text      # never overwritten
    assert "inside the data folder" in refused(generate_key_file, data / "sub" / "k.key", data_dirs=[data])
    assert not (data / "sub" / "k.key").exists()
    (data / "k.key").write_text(text); os.chmod(data / "k.key", 0o600)
    m = refused(KeyStore.from_file, data / "k.key", data_dirs=[data])
    assert "inside the data folder" in m and str(data) in m and text.strip() not in m
    for mode in (0o644, 0o640, 0o604, 0o660):
        os.chmod(kf, mode)
        m = refused(KeyStore.from_file, kf, data_dirs=[data])
        assert f"mode {mode:04o}" in m and str(kf) in m and text.strip() not in m
    os.chmod(kf, 0o600)
    short = secrets / "short.key"; short.write_text(os.urandom(8).hex()); os.chmod(short, 0o600)
    m = refused(KeyStore.from_file, short)
    assert "8-byte key" in m and str(short) in m and short.read_text() not in m
    bad = secrets / "bad.key"; bad.write_text("zz" * 32); os.chmod(bad, 0o600)
    assert "malformed hex" in refused(KeyStore.from_file, bad)
    assert "does not exist" in refused(KeyStore.from_file, secrets / "none.key")
    assert "is not set" in refused(KeyStore.load)
    assert KeyStore.load(kf)._key == store._key


def test_key_file_refused_in_the_settings_data_dir(tmp_path, monkeypatch):
    project = tmp_path / "project"; project.mkdir()
    monkeypatch.setenv("MEDWB_SETTINGS", str(write_settings(project)))       # data_dir = project/
    inside, outside = project / "keys" / "k.key", tmp_path / "secrets" / "k.key"
    assert "inside the data folder" in refused(generate_key_file, inside)
    generate_key_file(outside)
    (project / "k.key").write_bytes(outside.read_bytes()); os.chmod(project / "k.key", 0o600)
    assert "inside the data folder" in refused(KeyStore.from_file, project / "k.key")
    assert KeyStore.from_file(outside)._key == bytes.fromhex(outside.read_text())


# ---------------------------------------------------------------- mapping table

@pytest.fixture
def mapped(tmp_path):
    store = KeyStore(os.urandom(32))
    people = pd.DataFrame({"pid": ["PAT-0001", "PAT-0002", "PAT-0003", "PAT-0001", None], "phone": ["13800138000", "13912345678", "13800138000", None, "15000000000"],
                           "hba1c": [6.1, 7.2, 5.9, 6.3, 8.0]})
    pseudo, table = pseudonymise_frame(people, {"pid": "patient_id", "phone": "phone"}, store)
    table.save(tmp_path / "map.json")
    return store, people, pseudo, table, tmp_path


def test_mapping_table_round_trip_and_access_log(mapped):
    store, people, pseudo, table, d = mapped
    assert pseudo.hba1c.equals(people.hba1c) and len(table) == 3 + 3
    assert pseudo.pid.isna().tolist() == people.pid.isna().tolist() and pseudo.pid[0] == pseudo.pid[3]
    assert pseudo.phone[0] == pseudo.phone[2] == pseudonymise("13800138000", store, "phone")
    raw = (d / "map.json").read_text()
    assert stat.S_IMODE((d / "map.json").stat().st_mode) == 0o600
    assert not any(v in raw for v in ["PAT-0001", "PAT-0002", "PAT-0003", "13800138000", "13912345678"]) and store._key.hex() not in raw
    t2 = MappingTable.load(d / "map.json", store)
    assert t2.verify() == 6 and t2.columns == {"pid": "patient_id", "phone": "phone"}
    got = [t2.reidentify(p, reason="linkage for follow-up study", user="alice") for p in pseudo.pid.dropna()]
    assert got == people.pid.dropna().tolist()
    assert t2.reidentify(pseudo.phone[1], reason="call back about result", user="bob") == "13912345678"
    log_text = (d / "map.json.access.jsonl").read_text()
    log = [json.loads(x) for x in log_text.splitlines()]
    assert len(log) == 5 and {x["outcome"] for x in log} == {"granted"}
    assert log[-1]["user"] == "bob" and log[-1]["reason"] == "call back about result" and log[-1]["pseudonym"] == pseudo.phone[1]
    assert log[-1]["domain"] == "phone" and {"time", "user", "pseudonym", "reason"} <= set(log[0])
    assert not any(v in log_text for v in ["PAT-0001", "PAT-0002", "PAT-0003", "13912345678"])
    # refusals: no reason (nothing logged), no user, unknown pseudonym (logged as such)
    assert "needs a reason" in refused(t2.reidentify, pseudo.pid[0], reason="  ", user="alice")
    assert "needs a reason" in refused(t2.reidentify, pseudo.pid[0], reason=None, user="alice")
    assert "user" in refused(t2.reidentify, pseudo.pid[0], reason="audit", user="")
    assert len((d / "map.json.access.jsonl").read_text().splitlines()) == 5
    assert "unknown pseudonym" in refused(t2.reidentify, "P-" + "A" * 26, reason="audit", user="alice")
    assert json.loads((d / "map.json.access.jsonl").read_text().splitlines()[-1])["outcome"] == "unknown pseudonym"
    assert "access log" in refused(MappingTable(store).reidentify, "P-X", reason="r", user="u")


def test_mapping_key_is_derived_not_the_hmac_key(mapped):
    store, _, pseudo, table, d = mapped
    p = pseudo.pid[0]
    dom, nonce, ct = table.entries[p]
    with pytest.raises(InvalidTag): AESGCM(store._key).decrypt(nonce, ct, f"{dom}\x00{p}".encode())
    assert "written under key id" in refused(MappingTable.load, d / "map.json", KeyStore(os.urandom(32)))
    # two tables of the same values use fresh nonces
    _, again = pseudonymise_frame(pd.DataFrame({"pid": ["PAT-0001"]}), {"pid": "patient_id"}, store)
    assert again.entries[p][1] != nonce and again.entries[p][2] != ct


def _tamper(path: Path, fn) -> None:
    doc = json.loads(path.read_text()); fn(doc); path.write_text(json.dumps(doc))


@pytest.mark.parametrize("how", ["flip", "swap", "domain", "nonce"])
def test_tampered_table_returns_nothing(mapped, how):
    store, people, pseudo, table, d = mapped
    a, b = pseudo.pid[0], pseudo.pid[1]
    def edit(doc):
        e = doc["entries"]
        if how == "flip":
            ct = bytearray(base64.b64decode(e[a][2])); ct[-1] ^= 0x01; e[a][2] = base64.b64encode(bytes(ct)).decode()
        elif how == "swap": e[a], e[b] = e[b], e[a]
        elif how == "domain": e[a][0] = "phone"
        else: e[a][1] = base64.b64encode(os.urandom(12)).decode()
    _tamper(d / "map.json", edit)
    t = MappingTable.load(d / "map.json", store)
    m = refused(t.reidentify, a, reason="audit", user="alice")
    assert "fails its AES-GCM authentication" in m and "PAT-0001" not in m and "PAT-0002" not in m
    assert "fails" in refused(t.verify)
    assert json.loads((d / "map.json.access.jsonl").read_text().splitlines()[-1])["outcome"] == "integrity failure"
    assert t.reidentify(pseudo.pid[2], reason="audit", user="alice") == "PAT-0003"     # untouched entries still open


def test_corrupt_table_files(mapped):
    store, _, _, _, d = mapped
    (d / "bad.json").write_text((d / "map.json").read_text()[:-40])
    assert "not valid JSON" in refused(MappingTable.load, d / "bad.json", store)
    _tamper(d / "map.json", lambda doc: doc["entries"].update({"P-X": ["phone", "%%%", "x"]}))
    assert "corrupt or was altered" in refused(MappingTable.load, d / "map.json", store)
    (d / "other.json").write_text('{"format": "something else"}')
    assert "not a medwb mapping table" in refused(MappingTable.load, d / "other.json", store)
    assert "no column" in refused(pseudonymise_frame, pd.DataFrame({"a": [1]}), {"b": "b"}, store)


# ---------------------------------------------------------------- resident ID check digit

def _mod11_2_holds(rid: str) -> bool:
    "ISO 7064 MOD 11-2 in its checking form: sum of a_i * 2^(18-i) over all 18 characters ≡ 1 (mod 11)."
    vals = [10 if c == "X" else int(c) for c in rid]
    return sum(v * 2 ** (17 - i) for i, v in enumerate(vals)) % 11 == 1


def test_resident_id_check_digit_known_values():
    # 11010519491231002X: 1*7+1*9+0*10+1*5+0*8+5*4+1*2+9*1+4*6+9*3+1*7+2*9+3*10+1*5+0*8+0*4+2*2 = 167;
    # 167 mod 11 = 2; (12 - 2) mod 11 = 10 -> 'X'
    assert resident_id_check_digit("11010519491231002") == "X"
    # 31010419850615432: 21+9+0+5+0+16+2+9+48+15+0+54+10+25+32+12+4 = 262; 262 mod 11 = 9; (12 - 9) mod 11 = 3
    assert resident_id_check_digit("31010419850615432") == "3"
    # 44030519900101123: 28+36+0+15+0+20+2+9+54+0+0+9+0+5+8+8+6 = 200; 200 mod 11 = 2 -> 'X'
    assert resident_id_check_digit("44030519900101123") == "X"
    for rid in ("11010519491231002X", "310104198506154323", "44030519900101123X", "11010519491231002x"):
        assert valid_resident_id(rid) and _mod11_2_holds(rid.upper())
    for first17 in ("11010119800101001", "51010719991231999", "65010220000229010"):
        rid = first17 + resident_id_check_digit(first17)
        assert valid_resident_id(rid) and _mod11_2_holds(rid)
        others = [rid[:17] + c for c in "0123456789X" if c != rid[17]]
        assert not valid_resident_id(others).any() and not any(_mod11_2_holds(o) for o in others)
    invalid = ["110105194912310021",   # wrong check character
               "11010519490230002X",   # 30 February
               "99010519491231002X",   # no province 99
               "11010518991231002X",   # born before 1900 (check character recomputed below)
               "1101051949123100",     # too short
               "11010519491231002Y", "", None, 11010519491231002]
    invalid[3] = invalid[3][:17] + resident_id_check_digit(invalid[3][:17])
    assert valid_resident_id(invalid).tolist() == [False] * len(invalid)
    ids = synthetic_resident_ids(2000, seed=1)
    assert all(_mod11_2_holds(r) for r in ids)
    for bad in ("1101051949123100", "1101051949123100A", 123):
        assert "17 digits" in refused(resident_id_check_digit, bad)


# ---------------------------------------------------------------- generalisation

def test_generalise_rules():
    raw = pd.DataFrame({"born": ["1950-06-30", "1950-07-01", "2014-07-01", "1930-01-01", None],
                        "postcode": ["100081", 518057, " 200030", None, "1000"],
                        "dx": ["E11", "E11", "I10", "C50", "E11"], "age": [0, 9.9, 10, 89, 95]})
    g = generalise(raw, {"born": AgeBand("2024-06-30", into="age_band"), "postcode": Truncate(3),
                         "dx": RareToOther(2, other="rare"), "age": Band(10, top=90)})
    assert list(g.columns) == ["postcode", "dx", "age", "age_band"]
    assert g.age_band.tolist()[:4] == ["70-79", "70-79", "0-9", "90-99"] and pd.isna(g.age_band[4])   # 74, 73, 9, 94
    assert g.postcode.tolist()[:3] == ["100*", "518*", "200*"] and pd.isna(g.postcode[3]) and g.postcode[4] == "100*"
    assert g.dx.tolist() == ["E11", "E11", "rare", "rare", "E11"]
    assert g.age.tolist() == ["0-9", "0-9", "10-19", "80-89", "90+"]
    assert g.attrs["generalised"]["age_band"].startswith("born: birth date → age at 2024-06-30")
    assert raw.born[0] == "1950-06-30"                                      # the input is not changed
    via_dict = generalise(raw, {"age": {"rule": "band", "width": 10, "top": 90}})
    assert via_dict.age.equals(g.age)
    assert "reference date" in refused(AgeBand)
    assert "not ISO dates" in refused(generalise, raw, {"dx": AgeBand("2024-01-01")})
    assert "after the reference date" in refused(generalise, raw, {"born": AgeBand("2000-01-01")})
    assert "'nope'" in refused(generalise, raw, {"nope": Band()})
    assert "must be one of" in refused(generalise, raw, {"age": {"rule": "round"}})
    assert "positive integer" in refused(Band, 0)


# ---------------------------------------------------------------- k, l, t

@pytest.fixture
def hand():
    """Three classes: (F, a) x3 dx X X Y, los 1 1 2; (F, b) x2 dx Y Z, los 2 4; (M, a) x5 dx X*5, los 1*5.

    Overall dx: X 7/10, Y 2/10, Z 1/10.
    Total variation: (F,a) ½(|2/3-.7| + |1/3-.2| + .1) = 2/15; (F,b) ½(.7 + .3 + .4) = .7; (M,a) ½(.3 + .2 + .1) = .3.
    Ordered EMD on los (values 1 < 2 < 4, m = 3, overall cumulative .7 .9 1):
    (F,a) cumulative 2/3 1 1 → (1/30 + .1)/2 = 1/15; (F,b) 0 .5 1 → (.7 + .4)/2 = .55; (M,a) 1 1 1 → (.3 + .1)/2 = .2.
    """
    return pd.DataFrame({"sex": list("FFFFFMMMMM"), "band": list("aaabbaaaaa"),
                         "dx": list("XXYYZXXXXX"), "los": [1, 1, 2, 2, 4, 1, 1, 1, 1, 1]})


def test_k_l_t_exact(hand):
    qi = ["sex", "band"]
    k, sizes = k_anonymity(hand, qi)
    assert k == 2 and sizes.to_dict() == {("F", "a"): 3, ("F", "b"): 2, ("M", "a"): 5}
    l, ls = l_diversity(hand, qi, "dx")
    assert l == 1 and ls.to_dict() == {("F", "a"): 2, ("F", "b"): 2, ("M", "a"): 1}
    t, ts = t_closeness(hand, qi, "dx")
    assert np.allclose(ts.to_numpy(), [2 / 15, 0.7, 0.3]) and np.isclose(t, 0.7)
    t, ts = t_closeness(hand, qi, "los")
    assert np.allclose(ts.to_numpy(), [1 / 15, 0.55, 0.2]) and np.isclose(t, 0.55)
    assert np.isclose(t_closeness(hand, qi, "los", ordered=False)[0], 0.7)                  # as categories: like dx
    assert k_anonymity(hand, ["sex"])[0] == 5 and l_diversity(hand, ["sex"], "dx")[0] == 1
    assert t_closeness(hand, ["sex"], "dx")[0] == pytest.approx(0.3)                        # F: X .4 Y .4 Z .2
    # a missing quasi-identifier value is a class of its own; a missing sensitive value is not counted
    h = hand.assign(band=hand.band.where(hand.index != 9, None), dx=hand.dx.where(hand.index != 0, None))
    k, sizes = k_anonymity(h, qi)
    assert k == 1 and sorted(sizes.tolist()) == [1, 2, 3, 4]
    assert l_diversity(h, qi, "dx")[1].tolist() == [2, 2, 1, 1]
    for bad in (lambda: k_anonymity(hand, []), lambda: k_anonymity(hand, ["nope"]), lambda: l_diversity(hand, qi, "sex"),
                lambda: k_anonymity(hand.iloc[:0], qi)):
        refused(bad)


def _known_classes() -> pd.DataFrame:
    "100 records in classes of 50, 30, 15, 3 and 2 (region × age band)."
    sizes = {("N", "20-29"): 50, ("N", "30-39"): 30, ("S", "20-29"): 15, ("S", "30-39"): 3, ("E", "40-49"): 2}
    rows = [(r, b) for (r, b), n in sizes.items() for _ in range(n)]
    df = pd.DataFrame(rows, columns=["region", "band"])
    df["dx"] = ["A", "B"] * 50
    return df


def test_release_suppresses_reports_and_refuses():
    df = _known_classes()
    qi = ["region", "band"]
    out, rep = release(df, qi, k=5)                              # 3 + 2 = 5 records = exactly 5%: allowed
    assert len(out) == 95 and rep["n_suppressed"] == 5 and rep["suppressed_share"] == 0.05 and not rep["forced"]
    assert rep["achieved"] == {"k": 15} and rep["target"] == {"k": 5, "l": None, "t": None}
    assert rep["suppressed_classes"] == [{"region": "E", "band": "40-49", "size": 2, "reason": "k"},
                                         {"region": "S", "band": "30-39", "size": 3, "reason": "k"}]
    assert k_anonymity(out, qi)[0] == 15 and out.attrs["release"] == rep
    m = refused(release, df, qi, k=20)                            # 15 + 3 + 2 = 20%
    assert "20 of 100" in m and "3 classes" in m and "force=True" in m
    out, rep = release(df, qi, k=20, force=True)
    assert len(out) == 80 and rep["forced"] and rep["achieved"]["k"] == 30 and rep["n_suppressed"] == 20
    assert sorted(c["size"] for c in rep["suppressed_classes"]) == [2, 3, 15]
    out, rep = release(df, qi, k=20, max_suppression=0.25)
    assert len(out) == 80 and not rep["forced"]
    assert "every record" in refused(release, df, qi, k=51, force=True)
    # l and t targets: a class with one diagnosis is suppressed for l
    df2 = df.copy(); df2.loc[df2.region == "S", "dx"] = "A"
    out, rep = release(df2, qi, k=2, sensitive="dx", l=2, force=True)
    assert rep["n_suppressed"] == 18 and {c["reason"] for c in rep["suppressed_classes"]} == {"l"}
    assert rep["achieved"]["l"] == 2 and rep["achieved"]["t"] == pytest.approx(0.0)
    out, rep = release(df, qi, k=1, sensitive="dx", t=0.2, force=True)   # E 40-49 (A, B) ok; S 30-39 (B, A, B) |2/3-1/2| = 1/6 ok
    assert rep["n_suppressed"] == 0 and rep["achieved"]["t"] <= 0.2
    # generalisation rules are applied first and reported
    out, rep = release(df.assign(age=[25] * 65 + [35] * 33 + [45] * 2), ["region", "age"], k=5, max_suppression=0.5,
                       rules={"age": Band(20)})
    assert rep["generalised"] == {"age": "20-wide bands"} and set(out.age) == {"20-39"}
    for kw in ({"k": 0}, {"l": 2}, {"t": 1.5, "sensitive": "dx"}, {"max_suppression": 2}):
        refused(release, df, qi, **kw)


def test_release_on_sklearn_diabetes():
    from sklearn.datasets import load_diabetes
    diab = load_diabetes(scaled=False, as_frame=True).frame
    expected = diab.groupby([(diab.age // 10 * 10).astype(int), "sex"]).size()     # independent class sizes
    banded = generalise(diab, {"age": Band(10, into="age_band")})
    k, sizes = k_anonymity(banded, ["age_band", "sex"])
    assert k == expected.min() == 3 and sorted(sizes.tolist()) == sorted(expected.tolist())
    for target in (5, 10):
        small = expected[expected < target]
        out, rep = release(banded, ["age_band", "sex"], k=target, sensitive="target")
        assert rep["n_suppressed"] == small.sum() and len(out) == 442 - small.sum()
        assert rep["achieved"]["k"] == expected[expected >= target].min()
        assert 0 <= rep["achieved"]["t"] <= 1 and rep["achieved"]["l"] >= 1
    assert expected[expected < 15].sum() / 442 > 0.05
    assert "30 of 442" in refused(release, banded, ["age_band", "sex"], k=15)


def test_privacy_summary(mapped):
    _, _, _, table, d = mapped
    _, rep = release(_known_classes(), ["region", "band"], k=5, sensitive="dx")
    s = privacy_summary(table, rep)
    json.dumps(s)
    p = s["pseudonymisation"]
    assert p["columns"] == {"pid": "patient_id", "phone": "phone"} and "HMAC-SHA-256" in p["method"]
    assert p["mapping_table"]["entries"] == 6 and p["mapping_table"]["path"] == str(d / "map.json")
    assert p["mapping_table"]["access_log"] == str(d / "map.json.access.jsonl") and "AES-256-GCM" in p["mapping_table"]["cipher"]
    a = s["anonymity"]
    assert a["achieved"]["k"] == 15 and a["n_suppressed"] == 5 and len(a["suppressed_classes"]) == 2
    assert "k = 15" in s["text"] and "5 of 100" in s["text"] and "pid, phone" in s["text"]
    assert privacy_summary(columns={"pid": "patient_id"})["anonymity"] is None
    assert "nothing to summarise" in refused(privacy_summary)

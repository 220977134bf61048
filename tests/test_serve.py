"The prediction service end to end: a real `medwb run`, the evidence gate, users with TOTP, a TLS uvicorn server on 127.0.0.1, the role table, bad input, tampering, drift, the audit log, load and fuzzing."
from __future__ import annotations

import json
import ssl
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyotp
import pytest

from conftest import medwb, write_settings
from medwb.core.settings import load_settings
from medwb.reports.html import assert_offline

SMALL = {"datasets": "breast_cancer", "models": "dummy, linear", "seeds": "0", "jobs": "2", "executor": "process", "n_boot": "200"}
USERS = {"dr.chen": "doctor", "tech.li": "technician", "admin.wang": "admin", "audit.zhao": "auditor"}
PASSWORD = "correct horse battery staple"


def _vid(reports: Path, model: str) -> str:
    return next((reports / "breast_cancer" / model).glob("*/manifest.json")).parent.name


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    "Two published breast-cancer versions, a key folder, the passing one deployed, four users."
    d = tmp_path_factory.mktemp("serve")
    s = write_settings(d, {**SMALL, "reports_dir": str(d / "reports")},
                       {"serve": {"state_dir": "state", "kek_dir": "keys", "verify_interval": "0", "drift_window": "500",
                                  "gates_image_classification": ""}})   # the tiny image version below has no report
    assert medwb("keys", "init", "--kek-dir", str(d / "keys")).returncode == 0
    r = medwb("run", settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    secrets = {}
    for name, role in USERS.items():
        import subprocess, sys
        from conftest import MEDWB
        p = subprocess.run([MEDWB, "--settings", str(s), "users", "add", name, "--role", role, "--password-stdin"],
                           input=PASSWORD + "\n", capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        secrets[name] = re.search(r"secret=([A-Z2-7]+)", p.stdout).group(1)
    return {"dir": d, "settings": s, "reports": d / "reports", "secrets": secrets,
            "linear": _vid(d / "reports", "linear"), "dummy": _vid(d / "reports", "dummy")}


def test_the_gate_refuses_the_dummy_and_deploys_the_linear_model(project):
    s = project["settings"]
    r = medwb("deploy", project["dummy"], "--reason", "try the baseline", settings=s)
    assert r.returncode == 2 and "cannot be deployed" in r.stderr and "roc_auc_ci_low >= 0.8" in r.stderr, r.stderr
    r = medwb("deploy", project["linear"], "--check", settings=s)
    assert r.returncode == 0 and "deployable" in r.stdout and "medwb verify" in r.stdout, r.stdout
    r = medwb("deploy", project["linear"], "--reason", "validated for the breast clinic pilot", "--by", "admin.wang", settings=s)
    assert r.returncode == 0 and "deployed" in r.stdout, r.stdout + r.stderr
    dep = json.loads((project["reports"] / "_deployed.json").read_text())
    assert set(dep["versions"]) == {project["linear"]} and dep["versions"][project["linear"]]["deployed_by"] == "admin.wang"
    index = (project["reports"] / "index.html").read_text()
    assert 'title="deployed: served by medwb serve' in index and index.count(">deployed</span>") == 1


@pytest.fixture(scope="module")
def server(project):
    "The service over TLS on 127.0.0.1 (a throwaway CA), and a logged-in client per role."
    from medwb.serve.app import create_app
    from medwb.serve.ops import ServerThread, make_test_certs
    if not (project["reports"] / "_deployed.json").exists():
        assert medwb("deploy", project["linear"], "--reason", "pilot", settings=project["settings"]).returncode == 0
    certs = make_test_certs(project["dir"] / "tls")
    app = create_app(load_settings(project["settings"]))
    with ServerThread(app, certfile=certs["cert"], keyfile=certs["key"]) as srv:
        c = httpx.Client(base_url=srv.url, verify=ssl.create_default_context(cafile=str(certs["ca"])), timeout=30)
        tokens = {}
        for name, role in USERS.items():
            r = c.post("/login", json={"username": name, "password": PASSWORD, "totp": pyotp.TOTP(project["secrets"][name]).now()})
            assert r.status_code == 200, r.text
            tokens[role] = r.json()["access_token"]
        yield {"client": c, "tokens": tokens, "url": srv.url, "certs": certs, "app": app, "srv": srv}
        c.close()


def _rows(n: int, shift: dict | None = None, seed: int = 0) -> list[dict]:
    "Patients drawn from the breast-cancer data (optionally one feature shifted by SDs), as request rows."
    from sklearn.datasets import load_breast_cancer
    X = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    rng = np.random.default_rng(seed)
    S = X.iloc[rng.integers(0, len(X), n)].copy()
    S = S + np.abs(rng.normal(0, 1e-6, S.shape)) * X.std().to_numpy()   # distinct patients: the service checks drift on distinct rows only
    for f, k in (shift or {}).items(): S[f] = S[f] + k * X[f].std()
    return [{"patient": f"P{seed}-{i}", "features": {k: float(v) for k, v in r.items()}} for i, r in enumerate(S.to_dict("records"))]


def _h(token): return {"Authorization": f"Bearer {token}"} if token else {}


def test_tls_only_and_a_doctor_gets_a_traceable_prediction_and_explanation(project, server):
    c, t, vid = server["client"], server["tokens"], project["linear"]
    with pytest.raises(httpx.HTTPError):
        httpx.get(server["url"].replace("https://", "http://") + "/health", timeout=5)   # plain HTTP to the TLS port: no answer
    r = c.post(f"/predict/{vid}", json=_rows(1)[0], headers=_h(t["doctor"]))
    assert r.status_code == 200, r.text
    j = r.json()
    man = json.loads((project["reports"] / "breast_cancer" / "linear" / vid / "manifest.json").read_text())
    assert (j["model_version"], j["artifact_sha256"], j["report_sha256"]) == (vid, man["files"]["model.joblib"], man["files"]["report.html"])
    assert 0 <= j["score"] <= 1 and j["label"] in ("malignant", "not malignant")
    e = c.post(f"/explain/{vid}", json=_rows(1)[0], headers=_h(t["doctor"])).json()
    assert e["explanation"]["explainer"] == "linear" and len(e["explanation"]["contributions"]) == 30
    assert c.post(f"/explain/{vid}", json=_rows(1)[0], headers=_h(t["technician"])).status_code == 403
    assert "/predict/" + vid in c.get("/openapi.json").text
    docs = c.get("/docs").text   # the API documentation works offline: its script is served by the service itself
    assert "cdn." not in docs and "/static-offline-docs/swagger-ui-bundle.js" in docs
    assert c.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200


def test_every_role_endpoint_pair_has_its_expected_status(project, server):
    from medwb.serve.auth import ENDPOINTS, ROLES, expected_status
    c, t, vid = server["client"], server["tokens"], project["linear"]
    calls = {"versions": ("GET", "/versions", None), "predict": ("POST", f"/predict/{vid}", _rows(1)[0]),
             "predict_batch": ("POST", f"/predict/{vid}/batch", {"rows": _rows(3)}), "explain": ("POST", f"/explain/{vid}", _rows(1)[0]),
             "metrics": ("GET", "/metrics", None), "ops": ("GET", "/ops", None), "audit": ("GET", "/audit", None),
             "users": ("GET", "/users", None), "deploy": ("POST", f"/deploy/{vid}", {"reason": "re-deploy after review"}),
             "undeploy": ("POST", f"/undeploy/{vid}", {"reason": "table test"}),
             "health": ("GET", "/health", None), "ready": ("GET", "/ready", None), "openapi": ("GET", "/openapi.json", None)}
    assert set(calls) >= set(ENDPOINTS) - {"login"}, set(ENDPOINTS) - set(calls)
    seen = []
    for role in (*ROLES, None):
        for ep, (method, path, body) in calls.items():
            r = c.request(method, path, json=body, headers=_h(t.get(role)))
            seen.append((role, ep, r.status_code))
            assert r.status_code == expected_status(role, ep), (role, ep, r.status_code, r.text[:300])
            if ep == "undeploy" and r.status_code == 200:   # put it back for the next role
                assert c.post(f"/deploy/{vid}", json={"reason": "back after the table test"}, headers=_h(t["admin"])).status_code == 200
    assert len(seen) == (len(ROLES) + 1) * len(calls)
    r = c.get("/versions", headers=_h(t["doctor"] + "x"))
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")


def test_bad_input_is_a_4xx_naming_the_problem_and_no_value_is_logged(project, server):
    c, t, vid = server["client"], server["tokens"], project["linear"]
    h = _h(t["doctor"])
    row = _rows(1)[0]
    out = {**row, "features": {**row["features"], "mean radius": 987654.321}}
    r = c.post(f"/predict/{vid}", json=out, headers=h)
    assert r.status_code == 422 and "features.mean radius" in r.json()["detail"] and "987654" not in r.text, r.text
    missing = {**row, "features": {k: v for k, v in row["features"].items() if k != "worst area"}}
    assert "features.worst area" in c.post(f"/predict/{vid}", json=missing, headers=h).json()["detail"]
    extra = {**row, "features": {**row["features"], "age": 50}}
    assert "features.age" in c.post(f"/predict/{vid}", json=extra, headers=h).json()["detail"]
    wrong = {**row, "features": {**row["features"], "mean texture": "rough"}}
    assert "features.mean texture" in c.post(f"/predict/{vid}", json=wrong, headers=h).json()["detail"]
    r = c.post(f"/predict/{vid}", content=b'{"features": {', headers={**h, "content-type": "application/json"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert c.post(f"/predict/{vid}/batch", json={"rows": _rows(257)}, headers=h).status_code == 422   # above [serve] max_batch
    assert c.post("/predict/0000000000000000", json=row, headers=h).status_code == 404
    log = (project["dir"] / "state" / "audit.log").read_text()
    assert "987654" not in log and "rough" not in log and "validate" in log


def test_one_changed_byte_in_the_deployed_artifact_is_refused_with_409(project, server):
    c, t, vid = server["client"], server["tokens"], project["linear"]
    art = project["reports"] / "breast_cancer" / "linear" / vid / "model.joblib"
    good = art.read_bytes()
    b = bytearray(good); b[len(b) // 2] ^= 0x01
    try:
        art.write_bytes(bytes(b))
        r = c.post(f"/predict/{vid}", json=_rows(1)[0], headers=_h(t["doctor"]))
        assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json"), r.text
        assert "model.joblib (changed)" in r.json()["detail"]
        from medwb.serve.audit import show_log
        assert show_log(project["dir"] / "state" / "audit.log", action="refusal")[-1]["detail"]["reason"] == "version_changed"
        assert c.get("/ready").status_code == 503
    finally: art.write_bytes(good)
    assert c.post(f"/predict/{vid}", json=_rows(1)[0], headers=_h(t["doctor"])).status_code == 200


def test_drift_alert_on_a_half_sd_shift_and_none_on_unshifted_traffic(project, server):
    c, t, vid = server["client"], server["tokens"], project["linear"]
    from medwb.serve.audit import show_log
    log = project["dir"] / "state" / "audit.log"
    before = len(show_log(log, action="drift_alert"))
    for k in range(2):   # 500 unshifted requests: one full window
        rows = _rows(250, seed=100 + k)
        assert c.post(f"/predict/{vid}/batch", json={"rows": rows}, headers=_h(t["doctor"])).status_code == 200
    server["app"].state.flush_drift()   # drift tests run off the request path
    mid = show_log(log, action="drift_alert")
    assert len(mid) == before, mid[before:]   # seeded traffic from the training distribution: no alert
    for k in range(2):   # 500 with mean radius shifted by 0.5 SD
        rows = _rows(250, {"mean radius": 0.5}, seed=200 + k)
        assert c.post(f"/predict/{vid}/batch", json={"rows": rows}, headers=_h(t["doctor"])).status_code == 200
    server["app"].state.flush_drift()
    after = show_log(log, action="drift_alert")
    assert len(after) > len(mid), "the shifted window raised no alert"
    assert "mean radius" in json.dumps(after[-1])
    body = c.get("/metrics", headers=_h(t["technician"])).text
    assert "medwb_requests_total" in body and "medwb_drift_psi" in body and vid in body
    page = c.get("/ops", headers=_h(t["auditor"])).text
    assert_offline(page); assert vid in page


def test_audit_log_verifies_names_an_edited_line_and_stops_service_while_broken(project, server):
    s, log = project["settings"], project["dir"] / "state" / "audit.log"
    r = medwb("audit", "verify", settings=s)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr
    r = medwb("audit", "show", "--user", "dr.chen", "--action", "login", settings=s)
    assert r.returncode == 0 and "dr.chen" in r.stdout
    lines = log.read_text().splitlines(keepends=True)
    edited = lines[:]
    e5 = json.loads(edited[4]); e5["outcome"] += " (edited)"   # longer: the running writer sees its tail move at once
    edited[4] = json.dumps(e5) + "\n"
    backup = log.read_text()
    try:
        log.write_text("".join(edited))
        r = medwb("audit", "verify", settings=s)
        assert r.returncode == 1 and "entry 5 " in r.stdout, r.stdout
        r = server["client"].post(f"/predict/{project['linear']}", json=_rows(1)[0], headers=_h(server["tokens"]["doctor"]))
        assert r.status_code == 503 and r.json()["type"].endswith("audit_unavailable"), r.text   # no entry, no prediction
    finally: log.write_text(backup)
    r = server["client"].post(f"/predict/{project['linear']}", json=_rows(1)[0], headers=_h(server["tokens"]["doctor"]))
    assert r.status_code == 200, r.text


def test_load_against_the_plain_baseline_and_fuzzing_find_no_errors(project, server):
    from medwb.serve.ops import baseline_app, compare_load, fuzz, ServerThread
    vid, t = project["linear"], server["tokens"]
    art = project["reports"] / "breast_cancer" / "linear" / vid / "model.joblib"
    rows = _rows(20, seed=7)
    feats = list(rows[0]["features"])
    base = baseline_app(art, feats, "classification")
    with ServerThread(base, certfile=server["certs"]["cert"], keyfile=server["certs"]["key"]) as b:
        table = compare_load(server["url"], [{"method": "POST", "path": f"/predict/{vid}", "json": r, "headers": _h(t["doctor"])} for r in rows],
                             b.url, [{"method": "POST", "path": "/predict", "json": {"features": r["features"]}} for r in rows],
                             rates=(20,), duration_s=1.0, verify=str(server["certs"]["ca"]))
    assert len(table) >= 2 and (table["error_rate"] == 0).all(), table.to_string()
    from medwb.serve.gate import deployed_records, deploy, undeploy
    s = load_settings(project["settings"])
    before = set(deployed_records(s.reports_dir))
    for role in ("doctor", "admin"):   # the admin's endpoints take free parameters (audit filters, version ids)
        f = fuzz(server["app"], token=t[role], max_examples=10)
        assert f["server_errors"] == 0 and f["cases"] > 100, (role, f["failures"][:3])
    # the admin's fuzzing may really undeploy or deploy a version (a generated hex prefix can match a deployed id, with a
    # valid reason): put the deployments back as they were, so that the tests after this one see the same service
    after = set(deployed_records(s.reports_dir))
    for v in sorted(before - after): deploy(s, v, by="test", reason="restored after fuzzing")
    for v in sorted(after - before): undeploy(s, v, by="test", reason="restored after fuzzing")
    assert set(deployed_records(s.reports_dir)) == before


def test_dockerfile_for_a_deployable_version_only(project):
    s, d = project["settings"], project["dir"]
    r = medwb("dockerfile", project["linear"], "--out", str(d / "Dockerfile"), settings=s)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (d / "Dockerfile").read_text()
    assert f'medwb.version_id="{project["linear"]}"' in text and "\nUSER " in text and "\nHEALTHCHECK " in text
    assert "requirements.lock" in text and "medwb.report_sha256=" in text
    r = medwb("dockerfile", project["dummy"], "--out", str(d / "Dockerfile.dummy"), settings=s)
    assert r.returncode == 2 and "not deployable" in r.stderr and not (d / "Dockerfile.dummy").exists()


def test_a_restart_mid_traffic_loses_no_acknowledged_audit_entry(project, server):
    "Traffic at a fixed rate while the server stops: every answered prediction has its entry, and the log still verifies."
    from medwb.serve.app import create_app, open_state
    from medwb.serve.audit import show_log, verify_log
    from medwb.serve.ops import ServerThread, open_loop
    s, log, vid = load_settings(project["settings"]), project["dir"] / "state" / "audit.log", project["linear"]
    before = len(show_log(log, action="predict"))
    srv = ServerThread(create_app(s), certfile=server["certs"]["cert"], keyfile=server["certs"]["key"]).start()
    reqs = [{"method": "POST", "path": f"/predict/{vid}", "json": r, "headers": _h(server["tokens"]["doctor"])} for r in _rows(40, seed=9)]
    out = {}
    t = threading.Thread(target=lambda: out.update(open_loop(srv.url, reqs, rate=40, duration_s=2.0, max_requests=80,
                                                              verify=str(server["certs"]["ca"]), timeout_s=2)))
    t.start(); time.sleep(1.0); srv.stop(); t.join(30)
    ok = out["ok"]
    assert 0 < ok < 80, out
    assert len(show_log(log, action="predict")) - before >= ok
    v = verify_log(log, open_state(s).audit_key)
    assert v.ok, v.reason
    assert [e["action"] for e in show_log(log) if e["action"].startswith("serve_")][-2:] == ["serve_start", "serve_stop"]


@pytest.fixture(scope="module")
def image_version(project):
    "A small_cnn lesion classifier trained for 2 epochs and published the way the imaging report publishes it (no report run)."
    from medwb.core.io import write_json
    from medwb.core.store import write_manifest
    from medwb.datasets.builtin import load_imaging_dataset
    from medwb.evaluation.metrics import choose_threshold
    from medwb.imaging.networks import fit, make_network, predict, split_params
    ds = load_imaging_dataset("lesions")
    tr, va = ds.split["train"][:48], ds.split["val"][:24]
    vid = "1ae5105000000001"
    ver = project["reports"] / "lesions" / "small_cnn" / vid
    ver.mkdir(parents=True)
    params = {"epochs": 2, "batch_size": 16, "augment": False}
    net_params, cfg = split_params(params)
    net = make_network("small_cnn", seed=0, **net_params)
    fit(net, ds.images[tr], ds.labels[tr], ds.images[va], ds.labels[va], config=cfg, out_dir=ver)
    thr = choose_threshold(ds.labels[va], predict(net, ds.images[va]), "youden")
    (ver / "report.html").write_text("<html>test version</html>")
    write_json(ver / "metrics.json", {"dataset": "lesions", "model": "small_cnn", "seed": 0, "task": "image_classification",
                                      "threshold": thr, "network_params": net_params, "train_config": cfg.__dict__, "limitations": []})
    write_manifest(ver, version_id=vid, status="ok", dataset="lesions", model="small_cnn", seed=0, task="image_classification",
                   params=params, created="2026-12-01T00:00:00+00:00")
    return {"vid": vid, "images": ds.images[ds.split["test"][:3]], "net": net}


def _png(arr) -> str:
    import base64, io
    from PIL import Image
    b = io.BytesIO(); Image.fromarray((np.clip(arr[0], 0, 1) * 255).round().astype(np.uint8)).save(b, format="PNG")
    return base64.b64encode(b.getvalue()).decode()


def test_an_image_classifier_is_served_with_grad_cam_and_bad_images_refused(project, server, image_version):
    import base64, io
    from PIL import Image
    c, t, vid = server["client"], server["tokens"], image_version["vid"]
    r = c.post(f"/deploy/{vid}", json={"reason": "image pilot"}, headers=_h(t["admin"]))
    assert r.status_code == 200, r.text
    img = image_version["images"][0]
    r = c.post(f"/predict/{vid}", json={"patient": "P-img", "image_base64": _png(img)}, headers=_h(t["doctor"]))
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["model_version"] == vid and 0 <= j["score"] <= 1 and j["label"] in ("lesion", "not lesion")
    e = c.post(f"/explain/{vid}", json={"image_base64": _png(img)}, headers=_h(t["doctor"])).json()
    ov = Image.open(io.BytesIO(base64.b64decode(e["explanation"]["overlay_png_base64"])))
    assert ov.size == img.shape[1:][::-1] and e["explanation"]["method"] == "gradcam"
    assert c.post(f"/explain/{vid}", json={"image_base64": _png(img)}, headers=_h(t["technician"])).status_code == 403
    text = base64.b64encode(b"chest pain since Monday, no fever").decode()
    r = c.post(f"/predict/{vid}", json={"image_base64": text}, headers=_h(t["doctor"]))
    assert r.status_code == 415 and "not a PNG" in r.json()["detail"], r.text
    big = np.zeros((1, 96, 128), np.float32)
    r = c.post(f"/predict/{vid}", json={"image_base64": _png(big)}, headers=_h(t["doctor"]))
    assert r.status_code == 422 and "does not resize" in r.json()["detail"], r.text
    assert c.post(f"/undeploy/{vid}", json={"reason": "end of image pilot"}, headers=_h(t["admin"])).status_code == 200


def test_a_drift_alert_can_start_a_new_run_never_a_promotion(project, server, monkeypatch):
    "With rerun_on_drift, a drifted window starts `medwb run` of that model on the declared fresh data; nothing is deployed."
    import dataclasses
    import medwb.serve.app as served
    from fastapi.testclient import TestClient
    from medwb.serve.app import create_app
    started = []
    monkeypatch.setattr(served.subprocess, "Popen", lambda cmd, **k: started.append(cmd))
    s = load_settings(project["settings"])
    s = dataclasses.replace(s, serve={**s.serve, "rerun_on_drift": "yes", "fresh_data": "breast_cancer", "drift_window": "100"})
    app = create_app(s)
    vid, before = project["linear"], json.loads((project["reports"] / "_deployed.json").read_text())["versions"]
    with TestClient(app) as c:
        r = c.post(f"/predict/{vid}/batch", json={"rows": _rows(100, {"mean radius": 1.0}, seed=300)}, headers=_h(server["tokens"]["doctor"]))
        assert r.status_code == 200, r.text
        app.state.flush_drift()
    assert len(started) == 1 and started[0][-6:] == ["--datasets", "breast_cancer", "--models", "linear", "--imaging", "none"], started
    assert json.loads((project["reports"] / "_deployed.json").read_text())["versions"] == before   # no promotion

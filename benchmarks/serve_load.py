"""Latency of the medwb prediction service against a plain FastAPI + joblib endpoint serving the same model, in one run.

    .venv/bin/python benchmarks/serve_load.py                    # rates 50 and 100 requests/s, 10 s each
    .venv/bin/python benchmarks/serve_load.py --rates 50,200 --seconds 20
    .venv/bin/python benchmarks/serve_load.py --audit 100000     # also: append and verify an audit log of that many entries

Everything is measured here, in a scratch project: `medwb run` publishes a breast-cancer logistic model, it is deployed,
a doctor is created with a TOTP secret, and both servers run with TLS on 127.0.0.1 (uvicorn, one worker each, in this
process). The load is open-loop (medwb.serve.ops.open_loop): each request leaves at its scheduled time whether or not
earlier ones have answered, and latency counts from that time, so queueing shows in the tail. medwb's overhead is
authentication, role check, schema validation, the integrity check of the version, the audit entry (fsync'd), metrics,
drift and the cache; the ratio p99(medwb) / p99(baseline) is printed per rate. On 2 cores the load generator shares the
machine with both servers: compare ratios, not absolute numbers, across machines.
"""
from __future__ import annotations

import argparse
import configparser
import json
import re
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDWB = str(Path(sys.executable).parent / "medwb")
PASSWORD = "benchmark password 2026"


def _project(d: Path) -> tuple[Path, str]:
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";")); cp.optionxform = str
    cp.read(ROOT / "settings.ini", encoding="utf-8")
    cp["medwb"].update({"templates_dir": str(ROOT / "nbs" / "reports"), "data_dir": str(d), "reports_dir": str(d / "reports"),
                        "datasets": "breast_cancer", "models": "linear", "imaging": "none", "n_boot": "200", "jobs": "1"})
    cp["serve"].update({"state_dir": str(d / "state"), "kek_dir": str(d / "keys")})
    s = d / "settings.ini"
    with open(s, "w", encoding="utf-8") as f: cp.write(f)
    for cmd in (["keys", "init", "--kek-dir", str(d / "keys")], ["--settings", str(s), "run"]):
        r = subprocess.run([MEDWB, *cmd], capture_output=True, text=True)
        if r.returncode: sys.exit(r.stdout + r.stderr)
    vid = next((d / "reports" / "breast_cancer" / "linear").glob("*/manifest.json")).parent.name
    r = subprocess.run([MEDWB, "--settings", str(s), "deploy", vid, "--reason", "benchmark"], capture_output=True, text=True)
    if r.returncode: sys.exit(r.stdout + r.stderr)
    r = subprocess.run([MEDWB, "--settings", str(s), "users", "add", "bench.doctor", "--role", "doctor", "--password-stdin"],
                       input=PASSWORD + "\n", capture_output=True, text=True)
    if r.returncode: sys.exit(r.stdout + r.stderr)
    return s, vid, re.search(r"secret=([A-Z2-7]+)", r.stdout).group(1)


def _audit(n: int, folder: Path) -> None:
    from medwb.serve.audit import AuditLog, verify_log
    log = AuditLog(folder / "bench-audit.log", b"k" * 32, durable=False)
    t0 = time.perf_counter()
    for i in range(n): log.append("predict", f"user{i % 7}", "ok", "v1", rows=1)
    log.checkpoint()
    t1 = time.perf_counter()
    v = verify_log(folder / "bench-audit.log", b"k" * 32)
    print(f"\naudit log: {n} entries appended in {t1 - t0:.2f} s without fsync ({(t1 - t0) / n * 1e6:.1f} µs each); "
          f"verified in {v.seconds:.2f} s: {'OK' if v.ok else v.reason}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="50,100"); ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--audit", type=int, default=0, help="also time an audit log of this many entries")
    a = ap.parse_args()
    import httpx, pyotp
    from sklearn.datasets import load_breast_cancer
    from medwb.core.settings import load_settings
    from medwb.serve.app import create_app
    from medwb.serve.ops import ServerThread, baseline_app, compare_load, make_test_certs
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter(); s, vid, secret = _project(d)
        print(f"scratch project: version {vid} published and deployed in {time.perf_counter() - t0:.1f} s")
        certs = make_test_certs(d / "tls")
        X = load_breast_cancer(as_frame=True).data
        rows = [{k: float(v) for k, v in r.items()} for r in X.sample(200, random_state=0).to_dict("records")]
        art = d / "reports" / "breast_cancer" / "linear" / vid / "model.joblib"
        with ServerThread(create_app(load_settings(s)), certfile=certs["cert"], keyfile=certs["key"]) as m, \
             ServerThread(baseline_app(art, list(X.columns), "classification"), certfile=certs["cert"], keyfile=certs["key"]) as b:
            tok = httpx.post(m.url + "/login", verify=ssl.create_default_context(cafile=str(certs["ca"])), json={"username": "bench.doctor", "password": PASSWORD,
                                                                         "totp": pyotp.TOTP(secret).now()}).json()["access_token"]
            h = {"Authorization": f"Bearer {tok}"}
            table = compare_load(m.url, [{"method": "POST", "path": f"/predict/{vid}", "json": {"features": r}, "headers": h} for r in rows],
                                 b.url, [{"method": "POST", "path": "/predict", "json": {"features": r}} for r in rows],
                                 rates=tuple(float(x) for x in a.rates.split(",")), duration_s=a.seconds, verify=certs["ca"])
        print("\n" + table.to_string(index=False))
        if a.audit: _audit(a.audit, d)


if __name__ == "__main__":
    main()

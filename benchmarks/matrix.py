"""Wall time of the default run matrix: cold, cached and one-parameter-changed runs, and where each job's time goes.

    .venv/bin/python benchmarks/matrix.py               # the default matrix of settings.ini (what the README's first command runs)
    .venv/bin/python benchmarks/matrix.py --quick       # 1 dataset x 2 models, no imaging: a smoke run
    .venv/bin/python benchmarks/matrix.py --executors   # also: the same matrix sequentially, to give the process pool's speed-up

Every timing is measured in this run, into a scratch reports folder. The per-stage breakdown comes from the executed
report notebooks themselves (papermill records each cell's duration): "imports, data" is the first code cell
(imports, loading and cleaning the dataset; in tabular reports also fitting and scoring the model), "training" the model and training section, "explanations" the explanation
sections, "other sections" every other cell, and "kernel start, render, hash" the job's wall time minus the notebook's
(starting the kernel, rendering HTML, hashing files, the manifest).
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDWB = str(Path(sys.executable).parent / "medwb")
STAGES = ("imports, data (tabular: fit)", "training", "explanations", "other sections", "kernel start, render, hash")


def settings_file(folder: Path, reports: Path, executor: str, quick: bool, change: bool = False) -> Path:
    "A copy of settings.ini writing to `reports`; `change`: one model parameter changed (random forest's n_estimators)."
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    cp.optionxform = str
    cp.read(ROOT / "settings.ini", encoding="utf-8")
    cp["medwb"].update(reports_dir=str(reports), templates_dir=str(ROOT / "nbs" / "reports"), data_dir=str(ROOT / "data"),
                       project=str(ROOT / "project.yml"), executor=executor)
    if quick: cp["medwb"].update(datasets="breast_cancer", models="dummy, random_forest", imaging="none")
    if change:
        n = int(cp["model.random_forest"].get("n_estimators", "100"))
        cp["model.random_forest"]["n_estimators"] = str(n + 1)
    p = folder / f"settings-{executor}{'-changed' if change else ''}.ini"
    with open(p, "w") as f: cp.write(f)
    return p


def timed_run(settings: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([MEDWB, "--settings", str(settings), "run"], capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode: sys.exit(f"medwb run failed:\n{r.stdout}\n{r.stderr}")
    return took, r.stdout.strip().splitlines()[-2]


def _stage(heading: str, first: bool) -> str:
    h = heading.lower()
    if first: return STAGES[0]
    if "training" in h: return "training"
    if "explanation" in h: return "explanations"
    return "other sections"


def breakdown(reports: Path) -> dict[str, dict[str, list[float]]]:
    "Job kind -> stage -> seconds per job, from the published report notebooks' cell durations."
    out: dict = defaultdict(lambda: defaultdict(list))
    for man in sorted(reports.glob("*/*/*/manifest.json")):
        m = json.loads(man.read_text())
        nb = json.loads((man.parent / "report.ipynb").read_text())
        kind = {"data": "data report", "classification": "tabular", "regression": "tabular"}.get(m["task"], m["task"])
        per, head, first = defaultdict(float), "", True
        for c in nb["cells"]:
            if c["cell_type"] == "markdown":
                lines = "".join(c["source"]).strip().splitlines()
                if lines and lines[0].startswith("#"): head = lines[0]
                continue
            d = (c.get("metadata", {}).get("papermill") or {}).get("duration") or 0.0
            if "parameters" in c.get("metadata", {}).get("tags", []) or "injected-parameters" in c.get("metadata", {}).get("tags", []):
                continue
            per[_stage(head, first)] += d
            first = False
        per["kernel start, render, hash"] = max(0.0, m["wall_time_s"] - sum(per.values()))
        for s in STAGES: out[kind][s].append(per.get(s, 0.0))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 dataset x 2 models, no imaging")
    ap.add_argument("--executors", action="store_true", help="also run the matrix sequentially (1 worker)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="medwb-bench-") as tmp:
        tmp = Path(tmp)
        par = settings_file(tmp, tmp / "par", "process", a.quick)
        t_cold, s_cold = timed_run(par)
        t_cache, s_cache = timed_run(par)
        t_change, s_change = timed_run(settings_file(tmp, tmp / "par", "process", a.quick, change=True))
        seq = None
        if a.executors: seq = timed_run(settings_file(tmp, tmp / "seq", "sequential", a.quick))
        bd = breakdown(tmp / "par")
    n_jobs = sum(len(v["training"]) for v in bd.values())
    print(f"machine: {os.cpu_count()} cores; matrix: {'quick' if a.quick else 'default settings.ini'}\n")
    print(f"{'run':<34}{'wall s':>9}{'vs cold':>10}   summary")
    print(f"{'cold (process pool)':<34}{t_cold:>9.1f}{1.0:>10.2f}   {s_cold}")
    print(f"{'cached re-run':<34}{t_cache:>9.1f}{t_cache / t_cold:>10.3f}   {s_cache}")
    print(f"{'one model parameter changed':<34}{t_change:>9.1f}{t_change / t_cold:>10.3f}   {s_change}")
    if seq: print(f"{'sequential (1 worker)':<34}{seq[0]:>9.1f}{seq[0] / t_cold:>10.2f}   {seq[1]}")
    print(f"\nwhere the time goes ({n_jobs} jobs published by the cold run and the changed one; seconds per job, mean):")
    print("  " + "; ".join(f"[{i + 1}] {s}" for i, s in enumerate(STAGES)))
    print(f"{'job kind':<22}{'jobs':>5}" + "".join(f"{f'[{i + 1}]':>8}" for i in range(len(STAGES))) + f"{'total':>9}{'job-s':>9}")
    grand = defaultdict(float)
    for kind, st in sorted(bd.items()):
        n = len(st["training"])
        means = {s: sum(st[s]) / n for s in STAGES}
        for s in STAGES: grand[s] += sum(st[s])
        print(f"{kind:<22}{n:>5}" + "".join(f"{means[s]:>8.1f}" for s in STAGES) + f"{sum(means.values()):>9.1f}{sum(sum(st[s]) for s in STAGES):>9.1f}")
    total = sum(grand.values())
    print(f"{'all jobs, job-s':<27}" + "".join(f"{grand[s]:>8.1f}" for s in STAGES) + f"{'':>9}{total:>9.1f}")
    print(f"{'share':<27}" + "".join(f"{100 * grand[s] / total:>7.0f}%" for s in STAGES))


if __name__ == "__main__":
    main()

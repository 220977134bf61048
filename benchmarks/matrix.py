"""Wall time of the run matrix: sequential vs process pool vs cached, and the share spent starting kernels.

    .venv/bin/python benchmarks/matrix.py            # the default matrix (2 datasets x 6 models)
    .venv/bin/python benchmarks/matrix.py --quick    # 2 datasets x 2 models, for a smoke run

Every timing is measured in this run; ratios are against the sequential run of the same matrix.
"""
from __future__ import annotations

import argparse
import configparser
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDWB = str(Path(sys.executable).parent / "medwb")


def settings_file(folder: Path, reports: Path, models: str, executor: str, jobs: int) -> Path:
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    cp.optionxform = str
    cp.read(ROOT / "settings.ini", encoding="utf-8")
    cp["medwb"].update(reports_dir=str(reports), templates_dir=str(ROOT / "nbs" / "reports"),
                       data_dir=str(ROOT / "data"), executor=executor, jobs=str(jobs))
    if models: cp["medwb"]["models"] = models
    p = folder / f"settings-{executor}.ini"
    with open(p, "w") as f: cp.write(f)
    return p


def timed_run(settings: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([MEDWB, "--settings", str(settings), "run"], capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode: sys.exit(f"medwb run failed:\n{r.stdout}\n{r.stderr}")
    return took, r.stdout.strip().splitlines()[-2]


def kernel_startup(n: int = 5) -> float:
    "Mean seconds for papermill to start a medwb kernel, run one trivial cell and shut it down."
    import nbformat
    import papermill as pm
    from medwb.run.jobs import ensure_kernel
    with tempfile.TemporaryDirectory() as d:
        nb = Path(d) / "empty.ipynb"
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), str(nb))
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            pm.execute_notebook(str(nb), str(Path(d) / "out.ipynb"), kernel_name=ensure_kernel(), progress_bar=False)
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 models instead of the default 6")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="process-pool workers")
    a = ap.parse_args()
    models = "dummy, linear" if a.quick else ""
    with tempfile.TemporaryDirectory(prefix="medwb-bench-") as tmp:
        tmp = Path(tmp)
        seq = settings_file(tmp, tmp / "seq", models, "sequential", 1)
        par = settings_file(tmp, tmp / "par", models, "process", a.jobs)
        t_seq, s_seq = timed_run(seq)
        t_par, s_par = timed_run(par)
        t_cache, s_cache = timed_run(par)
        n_jobs = len(list((tmp / "seq").glob("*/*/*/manifest.json")))
        t_kernel = kernel_startup()
    print(f"matrix: {n_jobs} jobs; machine: {os.cpu_count()} cores; process pool: {a.jobs} workers\n")
    print(f"{'run':<28}{'wall s':>9}{'vs sequential':>15}   summary")
    print(f"{'sequential (1 worker)':<28}{t_seq:>9.1f}{1.0:>15.2f}   {s_seq}")
    print(f"{f'process pool ({a.jobs} workers)':<28}{t_par:>9.1f}{t_par / t_seq:>15.2f}   {s_par}")
    print(f"{'cached re-run':<28}{t_cache:>9.1f}{t_cache / t_seq:>15.3f}   {s_cache}")
    print(f"\nparallel speed-up: {t_seq / t_par:.2f}x; cached re-run is {t_seq / t_cache:.0f}x faster than sequential")
    print(f"kernel start-up (papermill, trivial notebook): {t_kernel:.2f} s per job; "
          f"{n_jobs} jobs x {t_kernel:.2f} s = {n_jobs * t_kernel:.1f} s = {100 * n_jobs * t_kernel / t_seq:.0f}% of the sequential wall time")


if __name__ == "__main__":
    main()

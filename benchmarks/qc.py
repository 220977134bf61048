"""Throughput and peak memory of quality control (medwb.quality.checks.run_qc) on a large raw table, against a per-row loop.

    .venv/bin/python benchmarks/qc.py                  # 1,000,000 rows x 30 columns
    .venv/bin/python benchmarks/qc.py --quick          # 100,000 rows x 30 columns, for a smoke run
    .venv/bin/python benchmarks/qc.py --rows 250000    # any size

The raw table is what QC sees from a CSV export (`medwb.data.ingest.read_table`): every column of pandas' `str`
dtype, "" read as missing. It is built (not timed) by resampling the rows of the messy `clinic` table
(`medwb.datasets.clinic_demo.inject_errors(clinic_base())`, 23 columns) with fresh unique record_id and patient_id, so that
the uniqueness checks only find what was put there, plus 7 laboratory columns declared in an extended schema
(medwb/resources/schemas/clinic.yml + 7 columns with ranges): 30 columns. Errors are injected at a known rate
(`--error-rate`, share of cells, default 1%): each base row is drawn from the clinic records that carry an
injected error with probability 23 x rate (one error per such record), each laboratory cell is a type or
range error with probability rate, and 0.1% of rows each are exact duplicates, key duplicates and source
conflicts (copies of clean rows). The ground truth of every injection is kept and QC is scored against it.

Measured, all in this run (time.perf_counter; generation is not timed):
  * run_qc wall time on the N-row table, rows/s and cells/s, and on a sample of 100,000 rows (a tenth of N
    when N <= 100,000) for the scaling ratio;
  * peak memory of run_qc, three ways, each named where printed:
      - peak RSS of the process during run_qc: the kernel's high-water mark (VmHWM) reset just before the
        call (/proc/self/clear_refs). ru_maxrss (getrusage) before the first measured call is the
        process-lifetime peak, data generation included; after a reset it reads the same mark as VmHWM;
      - tracemalloc peak, in a separate traced run on `--trace-rows` rows (default at most 100,000: tracing
        slows run_qc down many times over, as it makes a Python object per string cell): Python objects
        and numpy buffers (numpy reports its allocations to tracemalloc; checked here) but NOT pyarrow
        buffers, which back pandas' `str` columns;
      - the pyarrow memory-pool peak in that traced run (a proxy pool with its own statistics);
  * time per stage within the measured run_qc calls: its internals (harmonise, _pandera_issues,
    _uniqueness) are wrapped with timers for those calls; the rest of run_qc (joining, de-duplicating and
    sorting the issues) is the total minus the stages;
  * a per-row Python loop over `itertuples()` doing only the numeric checks (missing, float() parse, range,
    hard limits, zero-means-missing) on a 20,000-row sample (median of 3 runs), extrapolated to rows/s. It
    does a subset of run_qc's checks, so the ratio flatters the loop. Its findings are compared with run_qc's on
    the same sample for the numeric columns without unit conversion; the script fails (exit 1) if they differ.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from medwb.datasets.clinic_demo import clinic_base, inject_errors, score_qc
import medwb.quality.checks as quality
from medwb.quality.checks import _MISSING, Schema, run_qc

ROOT = Path(__file__).resolve().parents[1]
LOOP_ROWS = 20_000
LOOP_REPEAT = 3
DUP_RATE = 0.001            # share of rows for each of: exact duplicate, key duplicate, source conflict
COPY_KINDS = ("duplicate", "key_duplicate", "source_conflict")
# (name, unit, range, mean, sd, decimals, lognormal): laboratory columns added to reach 30
LABS = [("creatinine", "mg/dL", (0.1, 20), 0.9, 0.25, 2, False), ("sodium", "mmol/L", (100, 180), 140, 3, 0, False),
        ("potassium", "mmol/L", (1.5, 9), 4.2, 0.4, 1, False), ("haemoglobin", "g/dL", (3, 25), 13.5, 1.5, 1, False),
        ("wbc", "10^9/L", (0.1, 200), 7.0, 0.35, 1, True), ("platelets", "10^9/L", (5, 2000), 250, 60, 0, False),
        ("crp", "mg/L", (0, 500), 3.0, 1.0, 1, True)]


# ---------------------------------------------------------------------------------------------------- data
def extended_schema() -> Schema:
    import yaml
    d = yaml.safe_load((ROOT / "medwb" / "resources" / "schemas" / "clinic.yml").read_text(encoding="utf-8"))
    for name, unit, rng, *_ in LABS:
        d["columns"][name] = {"type": "number", "unit": unit, "range": list(rng), "description": f"{name} (benchmark column)"}
    d["name"] = "clinic30"
    return Schema.from_dict(d)


def fmt(x: np.ndarray, decimals: int) -> np.ndarray:
    "Numbers as the strings a CSV export holds."
    return np.round(x, decimals).astype(int if decimals == 0 else float).astype(str).astype(object)


def big_table(n: int, rate: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    "(raw table of n rows x 30 str columns, truth: row, column, kind of every injected error)."
    rng = np.random.default_rng(seed)
    messy, truth = inject_errors(clinic_base(seed), seed + 1)
    small = truth[~truth["kind"].isin(COPY_KINDS)]          # in-place errors; copies lose meaning with fresh ids
    bad_rows = np.unique(small["row"].to_numpy())
    good_rows = np.setdiff1d(np.arange(len(messy)), bad_rows)
    n_copy = {k: int(round(n * DUP_RATE)) for k in COPY_KINDS}
    n_base = n - sum(n_copy.values())
    p_bad = min(1.0, (len(messy.columns)) * rate)           # one injected error per bad record
    from_bad = rng.random(n_base) < p_bad
    src = np.where(from_bad, bad_rows[rng.integers(len(bad_rows), size=n_base)],
                   good_rows[rng.integers(len(good_rows), size=n_base)])
    cols = {c: messy[c].to_numpy(object)[src] for c in messy.columns}
    cols["record_id"] = pd.Series(np.arange(n_base)).map("adm-{:07d}".format).to_numpy(object)
    pid = cols["patient_id"]
    keep = pd.isna(pid) | pd.Series(pid).astype(str).str.strip().str.casefold().isin(_MISSING).to_numpy()
    cols["patient_id"] = np.where(keep, pid, pd.Series(np.arange(n_base)).map("P{:07d}".format).to_numpy(object))
    t_parts = [pd.DataFrame({"row": np.arange(n_base), "src": src}).merge(
        small.rename(columns={"row": "src"})[["src", "column", "kind"]], on="src").drop(columns="src")]
    # laboratory columns: 2% blank (not an error: not required), `rate` type or range errors
    for j, (name, unit, (lo, hi), mu, sd, dec, logn) in enumerate(LABS):
        x = np.exp(rng.normal(np.log(mu), sd, n_base)) if logn else rng.normal(mu, sd, n_base)
        v = fmt(np.clip(x, lo, hi), dec)
        v[rng.random(n_base) < 0.02] = rng.choice(["", "NA", "n/a"])
        err = np.flatnonzero(rng.random(n_base) < rate)
        typ = rng.random(len(err)) < 0.5
        v[err[typ]] = rng.choice(np.array(["abc", "12..5", "?", "high"], dtype=object), typ.sum())
        v[err[~typ]] = fmt(hi * rng.uniform(1.5, 10, (~typ).sum()), dec)
        cols[name] = v
        t_parts.append(pd.DataFrame({"row": err, "column": name, "kind": np.where(typ, "type", "range")}))
    # copies of clean rows: exact duplicates, same patient and time with another record id, the LIS copy
    clean = np.ones(n_base, bool)
    clean[t_parts[0]["row"].to_numpy()] = False
    for p in t_parts[1:]: clean[p["row"].to_numpy()] = False
    ehr = cols["source"] == "EHR"
    pool = rng.permutation(np.flatnonzero(clean & ehr))
    parts, orig, kinds, start = [], [], [], 0
    for kind in COPY_KINDS:
        o = pool[start:start + n_copy[kind]]; start += n_copy[kind]
        c = {k: v[o].copy() for k, v in cols.items()}
        if kind == "key_duplicate":
            c["record_id"] = c["record_id"] + "-r"
            c["bp"] = np.array([f"{float(x) + 7:g}" for x in c["bp"]], dtype=object)
        if kind == "source_conflict":
            c["record_id"] = c["record_id"] + "-lis"; c["source"][:] = "LIS"
            c["glucose"] = np.array([f"{float(x) + d:g}" for x, d in zip(c["glucose"], rng.integers(15, 40, len(o)))], dtype=object)
        parts.append(c); orig.append(o); kinds += [kind] * len(o)
    cols = {k: np.concatenate([v] + [p[k] for p in parts]) for k, v in cols.items()}
    orig = np.concatenate(orig)
    copy_row = np.arange(n_base, n)
    order = rng.permutation(n)                               # new position -> old position
    pos = np.empty(n, int); pos[order] = np.arange(n)        # old position -> new position
    kinds = np.array(kinds)
    ct = pd.DataFrame({"row": np.where(kinds == "source_conflict", pos[copy_row], np.maximum(pos[copy_row], pos[orig])),
                       "column": np.where(kinds == "source_conflict", "glucose", "*"), "kind": kinds})
    truth = pd.concat(t_parts, ignore_index=True)
    truth["row"] = pos[truth["row"].to_numpy()]
    truth = pd.concat([truth, ct], ignore_index=True).sort_values("row", ignore_index=True)
    raw = pd.DataFrame({k: pd.Series(v[order], dtype=str) for k, v in cols.items()}, columns=list(messy.columns) + [l[0] for l in LABS])
    raw = raw.mask(raw == "")                                # as read_table: "" is missing
    return raw, truth


# ---------------------------------------------------------------------------------------------------- memory
def rss_kib() -> tuple[int, int]:
    "(VmRSS, VmHWM) of this process in KiB."
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")): got[line.split(":")[0]] = int(line.split()[1])
    return got["VmRSS"], got["VmHWM"]


def reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f: f.write("5")
        return True
    except OSError:
        return False


def maxrss_kib() -> int: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux


def gib(kib: float) -> str: return f"{kib / 2 ** 20:.2f} GiB" if abs(kib) >= 2 ** 20 else f"{kib / 2 ** 10:.0f} MiB"


def numpy_traced() -> bool:
    "Does tracemalloc see numpy's data buffers? (numpy reports them through PyTraceMalloc_Track.)"
    tracemalloc.start()
    a = np.ones(10_000_000)                                  # 80 MB
    seen = tracemalloc.get_traced_memory()[1] >= a.nbytes
    del a
    tracemalloc.stop()
    return seen


def traced_run(raw, schema) -> tuple[float, int, int | None]:
    "(seconds, tracemalloc peak bytes, pyarrow pool peak bytes) of one run_qc under tracemalloc."
    pool = None
    try:
        import pyarrow as pa
        default = pa.default_memory_pool()
        pool = pa.proxy_memory_pool(default)
        # buffers allocated from the proxy may outlive this function (pandas caches): never free the pool
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(pool))
        pa.set_memory_pool(pool)
    except ImportError:
        pass
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    res = run_qc(raw, schema)
    took = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if pool is not None: pa.set_memory_pool(default)
    del res
    return took, peak, pool.max_memory() if pool is not None else None


# ---------------------------------------------------------------------------------------------------- loop
def loop_qc(raw: pd.DataFrame, schema: Schema) -> list[tuple[int, str, str]]:
    "The numeric checks of run_qc, one row and one cell at a time: (row, column, check)."
    specs = [(raw.columns.get_loc(c), c, s.required, s.zero_means_missing, s.range, s.plausible)
             for c, s in schema.columns.items() if s.type in ("number", "integer")]
    missing = _MISSING
    found = []
    for i, row in enumerate(raw.itertuples(index=False, name=None)):
        for j, c, required, zm, rng, plausible in specs:
            v = row[j]
            if v is None or v != v or v.strip().casefold() in missing:
                if required: found.append((i, c, "missing"))
                continue
            try: x = float(v)
            except ValueError:
                found.append((i, c, "type")); continue
            if zm and x == 0:
                found.append((i, c, "zero_means_missing")); continue
            if rng is not None and not rng[0] <= x <= rng[1]: found.append((i, c, "range"))
            if plausible is not None and not plausible[0] <= x <= plausible[1]: found.append((i, c, "impossible"))
    return found


STAGES = {"harmonise": "harmonise (parse, units, dates, categories)", "_pandera_issues": "pandera validation (_pandera_issues)",
          "_uniqueness": "uniqueness (_uniqueness)"}


def timed_qc(raw, schema) -> tuple[float, object, dict, dict]:
    """(seconds, QCResult, memory: RSS at the start, peak RSS during the call, ru_maxrss before and after,
    seconds per stage) of one run_qc, its stages timed by wrapping the module functions it calls."""
    stage = {}
    originals = {name: getattr(quality, name) for name in STAGES}
    def timer(name, fn):
        def wrapped(*a, **k):
            t0 = time.perf_counter()
            try: return fn(*a, **k)
            finally: stage[name] = stage.get(name, 0.0) + time.perf_counter() - t0
        return wrapped
    gc.collect()
    rss0, _ = rss_kib()
    before = maxrss_kib()
    reset = reset_hwm()
    try:
        for name, fn in originals.items(): setattr(quality, name, timer(name, fn))
        t0 = time.perf_counter()
        res = run_qc(raw, schema)
        took = time.perf_counter() - t0
    finally:
        for name, fn in originals.items(): setattr(quality, name, fn)
    _, hwm = rss_kib()
    assert set(stage) == set(STAGES), stage
    return took, res, {"rss0": rss0, "hwm": hwm if reset else None, "maxrss_before": before, "maxrss_after": maxrss_kib()}, stage


# ---------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the raw table (default 1000000)")
    ap.add_argument("--quick", action="store_true", help="100,000 rows")
    ap.add_argument("--trace-rows", type=int, default=None,
                    help="rows for the tracemalloc run (default: at most 100000; tracing slows run_qc down several-fold)")
    ap.add_argument("--error-rate", type=float, default=0.01, help="share of cells with an injected error (default 0.01)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    n = 100_000 if a.quick else a.rows
    n_small = 100_000 if n > 100_000 else max(n // 10, 1_000)
    n_trace = min(n, a.trace_rows or 100_000)
    schema = extended_schema()

    t0 = time.perf_counter()
    raw, truth = big_table(n, a.error_rate, a.seed)
    gen_s = time.perf_counter() - t0
    ncol = raw.shape[1]
    assert ncol == len(schema.columns) == 30, (ncol, len(schema.columns))
    cell_truth = truth[~truth["kind"].isin(COPY_KINDS)]
    raw_mib = raw.memory_usage(deep=True).sum() / 2 ** 20
    print(f"raw table: {n:,} rows x {ncol} columns ({raw.dtypes.iloc[0]} dtype, {raw_mib:,.0f} MiB), built in {gen_s:.1f} s (not timed); "
          f"{len(cell_truth):,} injected cell errors ({len(cell_truth) / (n * ncol):.2%} of cells) + "
          f"{(truth['kind'].isin(COPY_KINDS)).sum():,} copied rows; {os.cpu_count()} cores, "
          f"pandas {pd.__version__}, numpy {np.__version__}\n")

    maxrss_gen = maxrss_kib()       # before any high-water-mark reset: the process lifetime, generation included

    # warm-up (imports pandera, builds caches) on the 472-row clinic table, scored for reference
    messy, mtruth = inject_errors(clinic_base(a.seed), a.seed + 1)
    messy = messy.astype(str).mask(messy.astype(str) == "")
    small_score = score_qc(run_qc(messy, Schema.load(ROOT / "medwb" / "resources" / "schemas" / "clinic.yml")).issues, mtruth)

    # scaling: a sample of n_small rows (rows are in random order: the first n_small are a random sample)
    small = raw.iloc[:n_small].reset_index(drop=True)
    t_small, res, mem_small, st_small = timed_qc(small, schema)
    del res, small

    # the measured run: wall time and peak RSS (high-water mark reset just before the call)
    t_qc, res, mem, st = timed_qc(raw, schema)
    issues = res.issues
    n_issues, by_check = len(issues), issues["check"].value_counts()
    t0 = time.perf_counter()
    score = score_qc(issues, truth)
    score_s = time.perf_counter() - t0
    del res, issues

    # Python-heap and pyarrow peaks: another run under tracemalloc (slower: tracing overhead)
    np_seen = numpy_traced()
    t_traced, tm_peak, arrow_peak = traced_run(raw.iloc[:n_trace].reset_index(drop=True), schema)

    # the per-row loop on a sample, and run_qc's findings on the same sample
    sample = raw.iloc[:LOOP_ROWS].reset_index(drop=True)
    loop_times = []
    for _ in range(LOOP_REPEAT):
        gc.collect()
        t0 = time.perf_counter()
        loop_found = loop_qc(sample, schema)
        loop_times.append(time.perf_counter() - t0)
    t_loop = statistics.median(loop_times)
    plain = [c for c, s in schema.columns.items() if s.type in ("number", "integer") and not (s.convert or s.unit_column)]
    checks = ("missing", "type", "range", "impossible", "zero_means_missing")
    si = run_qc(sample, schema).issues
    qc_set = set(si.loc[si["column"].isin(plain) & si["check"].isin(checks), ["row", "column", "check"]].itertuples(index=False, name=None))
    loop_set = {f for f in loop_found if f[1] in plain}
    agree = qc_set == loop_set

    # ---- report
    print(f"{'run':<52}{'rows':>11}{'wall s':>9}{'rows/s':>13}{'cells/s':>14}{'us/row':>9}")
    line = lambda what, rows, s: print(f"{what:<52}{rows:>11,}{s:>9.2f}{rows / s:>13,.0f}{rows * ncol / s:>14,.0f}{1e6 * s / rows:>9.2f}")
    line("run_qc, sample", n_small, t_small)
    line("run_qc, full table", n, t_qc)
    line("run_qc under tracemalloc (memory run only)", n_trace, t_traced)
    line(f"per-row Python loop, numeric checks (median of {LOOP_REPEAT})", LOOP_ROWS, t_loop)
    print(f"\nrun_qc: {n / t_qc:,.0f} rows/s, {n * ncol / t_qc:,.0f} cells/s on {n:,} rows x {ncol} columns; {n_issues:,} issues found")
    ratio = (n / t_qc) / (LOOP_ROWS / t_loop)
    n_num = sum(s.type in ("number", "integer") for s in schema.columns.values())
    print((f"vectorised QC is {ratio:.1f}x faster per row than a per-row Python loop " if ratio >= 1 else
           f"vectorised QC is {1 / ratio:.1f}x SLOWER per row than a per-row Python loop (ratio {ratio:.2f}) ")
          + f"({LOOP_ROWS / t_loop:,.0f} rows/s doing only the numeric checks of {n_num} columns)")
    print(f"scaling: {n_small:,} -> {n:,} rows ({n / n_small:.0f}x) takes {t_qc / t_small:.1f}x the time; "
          f"time per row at {n:,} / at {n_small:,} = {(t_qc / n) / (t_small / n_small):.2f} (1.00 = linear)")
    print(f"loop vs run_qc on the {LOOP_ROWS:,}-row sample, numeric columns without unit conversion ({len(plain)}): "
          + (f"the same {len(qc_set):,} findings" if agree else
             f"DIFFER: {len(qc_set - loop_set)} only in run_qc, {len(loop_set - qc_set)} only in the loop, e.g. "
             f"{sorted(qc_set ^ loop_set)[:5]}"))

    print(f"\n{'stage of run_qc (same calls as above)':<58}{f'{n_small:,} rows':>18}{f'{n:,} rows':>24}")
    for key, what in list(STAGES.items()) + [(None, "rest of run_qc (join, dedupe, sort, ids)")]:
        a, b = ((d[key] if key else t - sum(d.values())) for d, t in ((st_small, t_small), (st, t_qc)))
        print(f"{what:<58}{a:>9.2f} s {a / t_small:>5.0%}{b:>15.2f} s {b / t_qc:>5.0%}")

    print(f"\npeak memory of run_qc (the raw table itself: {raw_mib:,.0f} MiB of str columns at {n:,} rows):")
    print(f"  ru_maxrss (getrusage RUSAGE_SELF) before the first measured call: {gib(maxrss_gen)} "
          f"(process-lifetime peak: building the table included)")
    for rows, m in ((n_small, mem_small), (n, mem)):
        if m["hwm"] is not None:
            print(f"  {rows:>9,} rows: peak RSS during run_qc (VmHWM, reset just before the call) {gib(m['hwm'])}, "
                  f"{'+' if m['hwm'] >= m['rss0'] else '-'}{gib(abs(m['hwm'] - m['rss0']))} over the {gib(m['rss0'])} resident at the start; "
                  f"ru_maxrss after the call {gib(m['maxrss_after'])} (the same reset high-water mark)")
        else:
            print(f"  {rows:>9,} rows: peak RSS during run_qc not measurable (/proc/self/clear_refs refused); ru_maxrss "
                  f"{gib(m['maxrss_before'])} before, {gib(m['maxrss_after'])} after (process-lifetime peak: grows only past it)")
    print(f"  {n_trace:>9,} rows: tracemalloc peak {gib(tm_peak / 1024)} (Python objects + numpy buffers; "
          f"numpy buffers traced: {'yes' if np_seen else 'NO'}), separate traced run")
    if arrow_peak is not None:
        print(f"  {'':>9}       pyarrow memory-pool peak {gib(arrow_peak / 1024)} in that run (str buffers; not seen by tracemalloc)")

    print(f"\nissues by check: " + ", ".join(f"{k} {v:,}" for k, v in by_check.items()))
    per = score["per_kind"].set_index("kind")["recall"]
    sper = small_score["per_kind"].set_index("kind")["recall"]
    print(f"against the injected truth ({score_s:.1f} s to score): recall {score['recall']:.4f} "
          f"({score['found']:,} / {score['injected']:,}), false-alarm rate {score['false_alarm_rate']:.4f}; "
          f"the 472-row clinic table: recall {small_score['recall']:.4f}, false-alarm rate {small_score['false_alarm_rate']:.4f}")
    print("recall per kind (this table / clinic table): " +
          ", ".join(f"{k} {per[k]:.3f}/{sper[k]:.3f}" if k in sper else f"{k} {per[k]:.3f}/-" for k in per.index))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())

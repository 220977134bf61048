"""Wall time of the vectorised bootstrap (medwb.evaluation.uncertainty) against a plain loop over resamples with scikit-learn.

    .venv/bin/python benchmarks/bootstrap.py                # 10,000 predictions x 1,000 resamples
    .venv/bin/python benchmarks/bootstrap.py --boot 200     # fewer resamples, for a smoke run

Both sides get the same stratified (classification) or plain (regression) resample counts, drawn once and
not timed. The loop builds each resampled data set (`np.repeat`) and calls scikit-learn's metric functions,
which is what a straightforward implementation does. The script fails (exit 1) if any metric differs by
more than 1e-12 between the two.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
from sklearn import metrics as skm

from medwb.evaluation.uncertainty import bootstrap_classification, bootstrap_regression, bootstrap_weights

TOL = 1e-12


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    "Binary outcomes (~30% prevalence) with correlated probabilities; continuous outcomes with predictions."
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    score = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.5 * y - 1.2)))
    yr = rng.normal(0, 1, n)
    pr = 0.8 * yr + rng.normal(0, 0.5, n)
    return y, score, yr, pr


def loop_classification(y, score, W, threshold: float = 0.5) -> dict[str, np.ndarray]:
    out = {m: np.empty(len(W)) for m in ("accuracy", "sensitivity", "specificity", "precision", "npv", "f1",
                                         "roc_auc", "pr_auc", "brier")}
    z = dict(zero_division=np.nan)
    rows = np.arange(len(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r, w in enumerate(W):
            i = np.repeat(rows, w)
            yi, si = y[i], score[i]
            pi = (si >= threshold).astype(int)
            out["accuracy"][r] = skm.accuracy_score(yi, pi)
            out["sensitivity"][r] = skm.recall_score(yi, pi, pos_label=1, **z)
            out["specificity"][r] = skm.recall_score(yi, pi, pos_label=0, **z)
            out["precision"][r] = skm.precision_score(yi, pi, pos_label=1, **z)
            out["npv"][r] = skm.precision_score(yi, pi, pos_label=0, **z)
            out["f1"][r] = skm.f1_score(yi, pi, **z)
            out["roc_auc"][r] = skm.roc_auc_score(yi, si)
            out["pr_auc"][r] = skm.average_precision_score(yi, si)
            out["brier"][r] = skm.brier_score_loss(yi, np.clip(si, 0, 1))
    return out


def loop_regression(y, pred, W) -> dict[str, np.ndarray]:
    out = {m: np.empty(len(W)) for m in ("mse", "rmse", "mae", "r2")}
    rows = np.arange(len(y))
    for r, w in enumerate(W):
        i = np.repeat(rows, w)
        yi, pi = y[i], pred[i]
        out["mse"][r] = skm.mean_squared_error(yi, pi)
        out["rmse"][r] = skm.root_mean_squared_error(yi, pi)
        out["mae"][r] = skm.mean_absolute_error(yi, pi)
        out["r2"][r] = skm.r2_score(yi, pi)
    return out


def timed(fn, *a) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = fn(*a)
    return time.perf_counter() - t0, res


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    "Largest absolute difference; NaN in one and not the other counts as infinite."
    if (np.isnan(a) != np.isnan(b)).any(): return float("inf")
    ok = ~np.isnan(a)
    return float(np.max(np.abs(a[ok] - b[ok]), initial=0.0))


def compare(task: str, vec_s: float, loop_s: float, vec: dict, loop: dict) -> bool:
    print(f"{task}: vectorised {vec_s:.3f} s, loop {loop_s:.3f} s, ratio {loop_s / vec_s:.1f}x")
    ok = True
    for m in loop:
        d = max_diff(vec[m], loop[m])
        ok &= d <= TOL
        print(f"  {m:12s} max |diff| {d:.2e}{'' if d <= TOL else '  > 1e-12: MISMATCH'}")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="predictions (default 10000)")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    y, score, yr, pr = synthetic(args.n, args.seed)
    print(f"n={args.n} predictions ({y.mean():.1%} events, {len(np.unique(score))} distinct scores), "
          f"{args.boot} resamples")

    W = bootstrap_weights(y, args.boot, args.seed, stratified=True)
    vec_s, vec = timed(bootstrap_classification, y, score, 0.5, W)
    loop_s, loop = timed(loop_classification, y, score, W)
    ok = compare("classification", vec_s, loop_s, vec, loop)

    Wr = bootstrap_weights(yr, args.boot, args.seed, stratified=False)
    rvec_s, rvec = timed(bootstrap_regression, yr, pr, Wr)
    rloop_s, rloop = timed(loop_regression, yr, pr, Wr)
    ok &= compare("regression", rvec_s, rloop_s, rvec, rloop)

    print("all metrics agree to 1e-12" if ok else "MISMATCH between vectorised and loop results")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Hyper-parameter search: grid vs random vs TPE to the same inner score, and the optimism of nested vs non-nested reporting, in one run.

    .venv/bin/python benchmarks/search.py                  # breast cancer, random forest, 4 grid points per parameter (64 trials)
    .venv/bin/python benchmarks/search.py --points 3       # a smaller grid (27 trials), for a smoke run

Part 1 searches one space (random forest: n_estimators, max_depth, max_features) on the hold-out training rows with each of
Optuna's grid, random and TPE samplers, the same inner folds and the same number of trials (the grid's size). The target is
the best inner score the grid search reached minus --tolerance; for each sampler it prints the trials and the wall seconds it
took to reach the target, over --repeats seeds, and the ratio of the grid's median seconds to that sampler's (> 1: faster than
the grid).

Part 2 puts the optimism side by side: on the real labels and on permuted labels (nothing to learn), the non-nested report
(inner best score of one search on the training rows, as many papers report it), its score on the held-out test rows, and the
nested design (the search repeated inside each of 5 outer folds). The optimism is the reported inner score minus the score on
rows the search never saw.
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np


SPACE = {"n_estimators": "int(10, 200, log)", "max_depth": "int(1, 12)", "max_features": "float(0.05, 1.0)"}


def reach(result, target: float) -> tuple[int | None, float | None]:
    "Trials and wall seconds until the best-so-far inner score first reached `target`."
    t = result.trials
    best = t["value"].where(t["state"] == "COMPLETE").cummax()
    hit = np.flatnonzero(best.to_numpy() >= target)
    if not len(hit): return None, None
    i = int(hit[0])
    return i + 1, float(t["seconds"].iloc[:i + 1].sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=4, help="grid points per parameter (the grid has points^3 trials)")
    ap.add_argument("--tolerance", type=float, default=0.0005, help="the target is the grid's best inner ROC-AUC minus this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="seeds of part 1")
    ap.add_argument("--nested-trials", type=int, default=20)
    a = ap.parse_args()
    from medwb.datasets.builtin import load_dataset
    from medwb.models.features import split_dataset
    from medwb.models.search import holdout_search, nested_search, run_search, search_space
    bc = load_dataset("breast_cancer")
    sp = split_dataset(bc, a.seed)
    rows = sp.train
    n = a.points ** 3
    print(f"Part 1 — breast_cancer, random_forest, {len(rows)} training rows, 3 inner folds, {n} trials per sampler, pruning off, "
          f"seeds {a.seed}..{a.seed + a.repeats - 1} (the grid's order is shuffled by the seed)\n")
    print(f"{'seed':<5} {'sampler':<8} {'best':>7} {'total s':>8} {'trials to target':>17} {'s to target':>12}")
    reached = {s: [] for s in ("grid", "random", "tpe")}
    for seed in range(a.seed, a.seed + a.repeats):
        res = {s: run_search(bc, search_space("random_forest", "classification",
                                              {**SPACE, "sampler": s, "n_trials": str(n), "grid_points": str(a.points), "prune": "false"}),
                             rows, seed) for s in reached}
        target = res["grid"].best_value - a.tolerance
        for s, r in res.items():
            k, secs = reach(r, target)
            reached[s].append((k, secs, r.trials["seconds"].sum()))
            print(f"{seed:<5} {s:<8} {r.best_value:>7.4f} {r.trials['seconds'].sum():>8.1f} {k if k else 'not reached':>17} "
                  f"{secs if secs is not None else float('nan'):>12.1f}")
    print(f"\ntarget: the grid's best inner ROC-AUC of the same seed minus {a.tolerance}; medians over seeds "
          "(a sampler that did not reach the target counts its whole search)")
    med = {s: float(np.median([x[1] if x[1] is not None else x[2] for x in v])) for s, v in reached.items()}
    for s, v in reached.items():
        print(f"{s:<8} reached in {sum(x[0] is not None for x in v)} of {len(v)} seeds; median {np.median([x[0] or n for x in v]):.0f} trials, "
              f"{med[s]:.1f} s to target; grid s / s = {med['grid'] / med[s]:.2f}x")

    print(f"\nPart 2 — optimism: reported inner score minus the score on rows the search never saw (TPE, {a.nested_trials} trials)\n")
    space = search_space("random_forest", "classification", {**SPACE, "n_trials": str(a.nested_trials)})
    y = np.random.default_rng(a.seed).permutation(bc.frame[bc.target].to_numpy())
    perm = dataclasses.replace(bc, frame=bc.frame.assign(**{bc.target: y}))
    print(f"{'labels':<9} {'design':<11} {'inner best':>10} {'unseen rows':>12} {'95% CI':>17} {'optimism':>9}")
    for label, ds in (("real", bc), ("permuted", perm)):
        for design, r in (("non-nested", holdout_search(ds, space, a.seed)), ("nested", nested_search(ds, space, a.seed))):
            o = r.outer
            ci = f"[{o['lo']:.3f}, {o['hi']:.3f}]"
            print(f"{label:<9} {design:<11} {r.inner_best:>10.4f} {o['estimate']:>12.4f} {ci:>17} {r.optimism['estimate']:>+9.4f}")


if __name__ == "__main__":
    main()

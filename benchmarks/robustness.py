"""Robustness and compression: what each compressed variant saves and costs, and what each attack costs, measured in one run.

    .venv/bin/python benchmarks/robustness.py                 # breast cancer (MLP, logistic, boosting) + the lesion CNN
    .venv/bin/python benchmarks/robustness.py --epochs 10     # a shorter CNN training

Prints, per model and variant on the same test rows: size ratio (original / variant), single-row p50 latency ratio
(original / variant; > 1 is faster), batch latency ratio, ROC-AUC and ΔROC-AUC with DeLong's 95% CI, and the share of
identical decisions. The baseline of every ratio is the original model measured in the same run, interleaved with its
variants (medwb.robustness.compress.latencies). Then, per attack on the MLP and on the CNN: seconds per attacked row or
image and the queries spent, against the clean prediction time of the same rows (the attack/predict ratio).
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def _variant_rows(label: str, table) -> None:
    for name, r in table.iterrows():
        d = "" if name == "original" or r["delta_auc"] != r["delta_auc"] else (
            f"Δ {r['delta_auc']:+.4f} ({r['delta_lo']:+.4f} to {r['delta_hi']:+.4f})" if r["delta_lo"] == r["delta_lo"] and r["delta_lo"] is not None
            else f"Δ {r['delta_auc']:+.4f}")
        if r.get("error"):
            print(f"  {label:<18} {name:<20} not built: {str(r['error'])[:90]}")
            continue
        print(f"  {label:<18} {name:<20} size ×{r['size_ratio']:<6.2f} p50 ×{r['latency_ratio']:<6.2f} batch ×{r['batch_ms_ratio']:<6.2f} "
              f"AUC {r['roc_auc']:.4f} {d:<32} same decisions {r['decisions_agree']:.1%}  {r['flags'] or ''}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30, help="epochs of the lesion CNN (the default run's setting)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from medwb.datasets.builtin import load_dataset, load_imaging_dataset
    from medwb.evaluation.metrics import evaluate_model
    import pandas as pd
    from medwb.imaging.networks import TrainConfig, fit, make_network, predict
    from medwb.evaluation.metrics import choose_threshold
    from medwb.models.zoo import TorchMLPClassifier
    from medwb.robustness import attacks as RA, compress as RC

    ds = load_dataset("breast_cancer")
    pos = np.arange(len(ds.ids))
    print("== compressed variants (breast cancer: 96 test rows; lesions: 94 test images)")
    for model in ("mlp", "linear", "gradient_boosting"):
        ev = evaluate_model(ds, model, seed=a.seed)
        te, va = ev.predictions, ev.validation
        idx = pd.Index(ds.ids)
        X_te, X_va = ds.X.iloc[idx.get_indexer(te["record_id"])], ds.X.iloc[idx.get_indexer(va["record_id"])]
        y_te = te["y_true"].to_numpy()
        pipe = ev.model
        if model == "mlp":
            Z = lambda X: np.asarray(pipe[:-1].transform(X), np.float32)
            keep = np.setdiff1d(pos, np.concatenate([idx.get_indexer(te["record_id"]), idx.get_indexer(va["record_id"])]))
            n_in = Z(X_te.head(1)).shape[1]
            rows = RC.torch_variants(pipe[-1].net_, Z(X_va), Z(X_te), student=lambda: TorchMLPClassifier(hidden=(8,), random_state=a.seed)._net(n_in, 1),
                                     x_train=Z(ds.X.iloc[keep]), y_train=ds.y[keep], y_calib=va["y_true"].to_numpy(), seed=a.seed)
        else:
            rows = RC.sklearn_variants(pipe, X_va, X_te)
        t = RC.variants_table(y_te, ev.threshold, rows[0], rows[1:], margin=0.02, n_boot=1000, seed=a.seed)
        t["batch_ms_ratio"] = t["batch_ms"].iloc[0] / t["batch_ms"]
        _variant_rows(model, t)

    ids = load_imaging_dataset("lesions")
    tr, va, te = ids.split["train"], ids.split["val"], ids.split["test"]
    net = make_network("small_cnn", seed=a.seed)
    t0 = time.perf_counter()
    fit(net, ids.images[tr], ids.labels[tr], ids.images[va], ids.labels[va], config=TrainConfig(epochs=a.epochs, lr=0.003, patience=6, seed=a.seed))
    train_s = time.perf_counter() - t0
    thr = choose_threshold(ids.labels[va], predict(net, ids.images[va]), "youden")
    rows = RC.torch_variants(net, ids.images[va], ids.images[te], student=lambda: make_network("small_cnn", seed=a.seed, channels=(8, 8, 16, 16)),
                             x_train=ids.images[tr], y_train=ids.labels[tr], y_calib=ids.labels[va], kd={"epochs": 20, "batch_size": 8, "lr": 0.003}, seed=a.seed, repeats=30)
    t = RC.variants_table(ids.labels[te], thr, rows[0], rows[1:], margin=0.02, n_boot=1000, seed=a.seed)
    t["batch_ms_ratio"] = t["batch_ms"].iloc[0] / t["batch_ms"]
    _variant_rows(f"small_cnn ({train_s:.0f} s)", t)

    print("\n== attack cost per row / image (seconds), against one clean prediction of the same rows")
    cfg = RA.RobustnessConfig()
    ev = evaluate_model(ds, "mlp", seed=a.seed)
    idx = pd.Index(ds.ids)
    p = ev.predictions
    tt = RA.tabular_target("mlp", ev.model, ds.X.iloc[idx.get_indexer(p["record_id"])], p["y_true"].to_numpy(), ev.threshold, ds.feature_names)
    it = RA.image_target("small_cnn", net, ids.images[te], ids.labels[te], thr)
    for target in (tt, it):
        t0 = time.perf_counter(); target.proba(target.x); base = (time.perf_counter() - t0) / len(target.x)
        e = (cfg.eps_tabular if target.kind == "tabular" else cfg.eps_imaging)[1]
        runs = {"fgsm": lambda: (RA.gradient_attack(target, "fgsm", e), None), "pgd": lambda: (RA.gradient_attack(target, "pgd", e, cfg.pgd_steps), None)}
        if target.kind == "image": runs["square"] = lambda: RA.square_attack(target, e, cfg.square_iterations)
        else:
            sub = RA.rows_of(target, np.arange(cfg.hsj_rows))
            runs["hopskipjump"] = lambda: RA.hopskipjump(sub, cfg.hsj_iterations, cfg.hsj_evaluations)
        RA.gradient_attack(RA.rows_of(target, np.arange(2)), "fgsm", e)   # warm-up: ART's import and first graph are not counted
        for name, fn in runs.items():
            t0 = time.perf_counter(); _, q = fn(); s = time.perf_counter() - t0
            n = cfg.hsj_rows if name == "hopskipjump" else len(target.x)
            print(f"  {target.name:<10} {name:<12} ε {target.eps_label(e):<8} {s / n * 1000:8.2f} ms per {'row' if target.kind == 'tabular' else 'image'}"
                  f"  ×{s / n / base:8.0f} a clean prediction" + (f"  {q / n:,.0f} queries each" if q else ""))


if __name__ == "__main__":
    main()

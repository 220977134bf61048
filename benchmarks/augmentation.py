"""Imaging training augmentation: medwb's batched augmentation against MONAI's per-sample dictionary transforms, in one run.

    .venv/bin/python benchmarks/augmentation.py               # lesions, one thread, 5 epochs of augmentation + 5 of training
    .venv/bin/python benchmarks/augmentation.py --epochs 30   # the default run's small_cnn budget

The baseline is a MONAI `Compose` of `RandRotated`, `RandFlipd` (both axes), `RandZoomd` and `RandGaussianNoised` with the
same probabilities and ranges as `medwb.imaging.networks.BatchAugment`, applied one sample at a time, which is what
medwb's training loop did before the batched version. Prints, for the lesion classifier's training images: seconds per
epoch of augmentation alone (per-sample / batched, and their ratio), for classification and segmentation (the mask
follows the image), and the seconds of a whole small_cnn fit with each (the fit ratio is what a training job saves).
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def monai_per_sample(segmentation: bool, seed: int):
    "The baseline: MONAI's dictionary transforms, one sample at a time (the same distribution as BatchAugment)."
    from monai.transforms import Compose, RandFlipd, RandGaussianNoised, RandRotated, RandZoomd
    keys = ["image", "label"] if segmentation else ["image"]
    modes = ["bilinear", "nearest"][:len(keys)]
    t = Compose([RandRotated(keys, range_x=np.pi / 12, prob=0.5, mode=modes, padding_mode="border"),
                 RandFlipd(keys, prob=0.5, spatial_axis=1), RandFlipd(keys, prob=0.5, spatial_axis=0),
                 RandZoomd(keys, prob=0.3, min_zoom=0.9, max_zoom=1.1, mode=modes, padding_mode="edge"),
                 RandGaussianNoised("image", prob=0.3, std=0.02)])
    t.set_random_state(seed=seed)

    def apply(xb, yb=None):
        import torch
        out = [t({"image": xb[i], "label": yb[i]} if segmentation else {"image": xb[i]}) for i in range(len(xb))]
        x = torch.stack([torch.as_tensor(np.asarray(o["image"]), dtype=torch.float32) for o in out])
        return x, (torch.stack([torch.as_tensor(np.asarray(o["label"]), dtype=torch.float32) for o in out]) if segmentation else None)
    return apply


def epoch_seconds(aug, x, y, bs: int, segmentation: bool, epochs: int) -> float:
    import torch
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for s in range(0, len(x), bs): aug(xt[s:s + bs], yt[s:s + bs] if segmentation else None)
    return (time.perf_counter() - t0) / epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5, help="epochs of augmentation timed, and of each small_cnn fit")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from medwb.datasets.builtin import load_imaging_dataset
    from medwb.imaging import networks as nw
    ds = load_imaging_dataset("lesions")
    tr, va = ds.split["train"], ds.split["val"]
    x, labels, masks = ds.images[tr], ds.labels[tr], ds.masks[tr].astype(np.float32)
    print(f"lesions: {len(tr)} training images of {x.shape[-2]}x{x.shape[-1]}, batches of 32, one thread, {a.epochs} epochs each\n")
    print(f"{'augmentation':<16} {'per-sample s/epoch':>19} {'batched s/epoch':>16} {'ratio':>7}")
    for seg in (False, True):
        y = masks if seg else labels
        base = epoch_seconds(monai_per_sample(seg, a.seed), x, y, 32, seg, a.epochs)
        new = epoch_seconds(nw.BatchAugment(seg, a.seed), x, y, 32, seg, a.epochs)
        print(f"{'segmentation' if seg else 'classification':<16} {base:>19.3f} {new:>16.3f} {base / new:>6.1f}x")

    # a whole fit with each: the training loop is medwb's, only the augmentation differs
    def fit_seconds(aug_factory) -> tuple[float, float]:
        orig = nw.augmentation
        nw.augmentation = aug_factory
        try:
            net = nw.make_network("small_cnn", seed=a.seed)
            t0 = time.perf_counter()
            h = nw.fit(net, x, labels, ds.images[va], ds.labels[va], config=nw.TrainConfig(epochs=a.epochs, lr=0.003, seed=a.seed, patience=a.epochs))
            return time.perf_counter() - t0, h.best_val_loss
        finally: nw.augmentation = orig

    def per_sample_batches(seg, seed):
        f = monai_per_sample(seg, seed)
        return lambda xb, yb=None: f(xb.cpu().numpy(), None if yb is None else yb.cpu().numpy())
    base, bl = fit_seconds(per_sample_batches)
    new, nl = fit_seconds(nw.augmentation)
    print(f"\nsmall_cnn fit, {a.epochs} epochs: per-sample {base:.1f} s (best val loss {bl:.4f}), batched {new:.1f} s "
          f"(best val loss {nl:.4f}); ratio {base / new:.2f}x")


if __name__ == "__main__":
    main()

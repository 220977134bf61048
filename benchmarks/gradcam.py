"""Grad-CAM throughput (medwb.explain.images.attribute, method "gradcam"): batched against one image at a time.

    .venv/bin/python benchmarks/gradcam.py                                # small_cnn and densenet121, 128 images, 1 thread
    .venv/bin/python benchmarks/gradcam.py --networks small_cnn --n 256   # any size
    .venv/bin/python benchmarks/gradcam.py --device cuda                  # on a GPU, when there is one

The images are `medwb.imaging.synthetic.make_lesion_images(n, size, seed=0)` (64 px by default). Each network is
`medwb.imaging.networks.make_network(name, seed=0)` in eval mode, untrained: the cost of a forward and backward
pass does not depend on the weights. Grad-CAM uses the network's `cam_layer`. Both modes call the same
function, `attribute(net, images, "gradcam", batch_size=B)`, with B = 1 (the single-image baseline) and
B = --batch (32): Captum's LayerGradCam, bilinear upsampling, scaling. Timing: time.perf_counter around the
whole call, one untimed warm-up call per mode, then --repeats timed calls alternating the two modes; the median
is reported. Everything is measured in this run, in this process, with torch.set_num_threads(--threads).
The batched maps are checked against the single-image maps (eval mode: batch norm uses its running statistics,
so a batch must not change any map); the script exits 1 if they differ by more than 1e-4 or if batching is
not at least --min-ratio times faster.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from medwb.imaging.synthetic import make_lesion_images
from medwb.explain.images import attribute
from medwb.imaging.networks import cam_layer, make_network


def timed(fn) -> tuple[float, np.ndarray]:
    "Seconds of one call of `fn` and its result (CUDA work waited for)."
    if torch.cuda.is_available(): torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available(): torch.cuda.synchronize()
    return time.perf_counter() - t, out


def bench(name: str, x: np.ndarray, batch: int, repeats: int, device: str) -> dict:
    "Median seconds of Grad-CAM on all of `x`, one image at a time and in batches, and the largest map difference."
    net = make_network(name, seed=0).to(device).eval()
    layer = cam_layer(net)
    run = {1: lambda: attribute(net, x, "gradcam", layer=layer, batch_size=1),
           batch: lambda: attribute(net, x, "gradcam", layer=layer, batch_size=batch)}
    for f in run.values(): f()                       # warm-up, untimed
    secs, maps = {1: [], batch: []}, {}
    for _ in range(repeats):
        for b, f in run.items():
            t, maps[b] = timed(f)
            secs[b].append(t)
    med = {b: statistics.median(v) for b, v in secs.items()}
    return {"network": name, "layer": layer, "n": len(x), "single_s": med[1], "batched_s": med[batch],
            "single_ips": len(x) / med[1], "batched_ips": len(x) / med[batch], "ratio": med[1] / med[batch],
            "max_abs_diff": float(np.abs(maps[1] - maps[batch]).max()), "all_s": secs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", default="small_cnn,densenet121", help="comma-separated medwb imaging network names")
    ap.add_argument("--n", type=int, default=128, help="images")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--batch", type=int, default=32, help="batch size of the batched mode")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per mode (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--min-ratio", type=float, default=1.5, help="fail unless batched is this many times faster")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    x = make_lesion_images(a.n, size=a.size, seed=0)["images"]
    dev = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else f"CPU, {a.threads} thread(s)"
    print(f"Grad-CAM throughput: {a.n} images of {a.size} x {a.size} px, batch {a.batch} vs 1, median of {a.repeats}; "
          f"torch {torch.__version__}, {dev}")
    print(f"{'network':<12} {'layer':<18} {'one at a time':>16} {'batched':>16} {'ratio':>7} {'max |diff|':>11}")
    ok = True
    for name in a.networks.split(","):
        r = bench(name.strip(), x, a.batch, a.repeats, a.device)
        print(f"{r['network']:<12} {r['layer']:<18} {r['single_ips']:>10.1f} img/s {r['batched_ips']:>10.1f} img/s "
              f"{r['ratio']:>6.2f}x {r['max_abs_diff']:>11.1e}")
        print(f"{'':<12} seconds per call: one at a time {[round(s, 3) for s in r['all_s'][1]]}, "
              f"batched {[round(s, 3) for s in r['all_s'][a.batch]]}")
        if r["max_abs_diff"] > 1e-4:
            print(f"FAIL {name}: batched maps differ from single-image maps by {r['max_abs_diff']:.2e}"); ok = False
        if r["ratio"] < a.min_ratio:
            print(f"FAIL {name}: batched is only {r['ratio']:.2f}x the single-image throughput (< {a.min_ratio})"); ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

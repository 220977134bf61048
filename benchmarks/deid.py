"""Free-text de-identification: recall per identifier kind (95% CI over notes), precision and speed of
medwb.privacy.phi.find_phi on the hand-written blind set (Chinese and English), the development set and
generated notes, against two baselines measured in the same run:

  * "before": the scrubber as it was before the blind set existed (medwb/privacy/phi.py at commit 390ad50,
    read from git; skipped when git or that commit is not available);
  * "presidio": Presidio's pattern recognizers alone (no language model), the English-format library medwb
    uses inside its own rules.

    .venv/bin/python benchmarks/deid.py            # all sets, 1000 bootstrap resamples
    .venv/bin/python benchmarks/deid.py --quick    # 200 resamples, blind set only

An identifier counts as removed when 80% of its non-space characters are inside detected spans (any type);
a detected span is correct when half of it is inside a marked identifier. Throughput is notes per second of
detection only (time.perf_counter, after one warm-up note so imports and gazetteers are not counted).
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
import types
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BEFORE_COMMIT = "390ad50"


def before_detector():
    "find_phi as of BEFORE_COMMIT, loaded as a module inside medwb.privacy so its relative imports resolve."
    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE_COMMIT}:medwb/privacy/phi.py"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    import medwb.privacy
    mod = types.ModuleType("medwb.privacy._phi_before"); mod.__package__ = "medwb.privacy"
    sys.modules[mod.__name__] = mod
    exec(compile(src, f"phi.py@{BEFORE_COMMIT}", "exec"), mod.__dict__)
    return mod.find_phi


def presidio_detector():
    from medwb.privacy.phi import Entity, _presidio_hits
    return lambda text: [Entity(s, e, k, text[s:e]) for s, e, k, _ in sorted(set(_presidio_hits(text)))]


def rate(detector, notes) -> float:
    texts = [n.text if hasattr(n, "text") else n[0] for n in notes]
    detector(texts[0])
    t0 = time.perf_counter()
    for t in texts: detector(t)
    return len(texts) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    from medwb.privacy.notes import deid_scores, note_set, synthetic_notes
    from medwb.privacy.phi import find_phi
    n_boot = 200 if a.quick else 1000
    folder = ROOT / "data" / "phi_notes"
    sets = {"blind zh": note_set("blind", folder, lang="zh"), "blind en": note_set("blind", folder, lang="en")}
    if not a.quick:
        sets |= {"dev zh": note_set("dev", folder, lang="zh"), "dev en": note_set("dev", folder, lang="en"),
                 "generated mixed": synthetic_notes(300, seed=4242, lang="mixed")}
    detectors = {"medwb": find_phi, "before": before_detector(), "presidio": presidio_detector()}
    detectors = {k: v for k, v in detectors.items() if v is not None}
    pd.set_option("display.width", 220); pd.set_option("display.max_columns", 20)
    summary = []
    for name, notes in sets.items():
        per_kind = {}
        for dname, det in detectors.items():
            s = deid_scores(notes, det, n_boot=n_boot)
            r = s["recall"]
            per_kind[dname] = r.apply(lambda x: f"{x.recall:.3f} [{x.ci_low:.3f}, {x.ci_high:.3f}]", axis=1)
            summary.append({"set": name, "detector": dname, "notes": s["notes"], "identifiers": int(r.loc["ALL", "n"]),
                            "recall": r.loc["ALL", "recall"], "recall_ci": f"[{r.loc['ALL', 'ci_low']:.3f}, {r.loc['ALL', 'ci_high']:.3f}]",
                            "precision": s["precision"]["precision"], "notes_per_s": rate(det, notes),
                            "left": len(s["residuals"])})
        table = pd.DataFrame(per_kind)
        table.insert(0, "n", deid_scores(notes, find_phi, n_boot=20)["recall"]["n"])
        print(f"\n== {name}: removal recall per kind [95% CI over notes]\n{table.to_string()}")
    out = pd.DataFrame(summary)
    base = out[out.detector == "medwb"].set_index("set")
    for col in ("recall", "notes_per_s"):
        out[f"{col}_vs_medwb"] = out.apply(lambda r: r[col] / base.loc[r["set"], col] if base.loc[r["set"], col] else float("nan"), axis=1)
    print("\n== summary (ratios against medwb's find_phi in this run)")
    print(out.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Pre-consultation triage: speed and accuracy of medwb's triage system against the keyword baseline, measured in the
same run on the same held-out vignettes of the common graph.

    .venv/bin/python benchmarks/triage.py              # 2000 vignettes, 300 questioned
    .venv/bin/python benchmarks/triage.py --quick      # 400 vignettes, 60 questioned

Prints, per system: vignettes per second of `triage(text)` (scrubbing, reading, ranking; after a warm-up so imports,
jieba's dictionary and the graph are not counted), top-1 / top-3 with Wilson CIs and the under-triage rate of
emergencies; then the cost of choosing one question by expected information gain against a random one (ms per
question), and the questions needed until the true disease is first, information gain vs random (paired).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    from medwb.scenarios.kg import common_graph
    from medwb.scenarios.systems import BayesTriage, KeywordTriage
    from medwb.scenarios.vignettes import generate_vignettes
    from medwb.scenarios.evaluate import run_vignettes, summarise, questioning, questioning_summary, questioning_paired
    from medwb.scenarios.question import choose_question
    n, nq = (400, 60) if a.quick else (2000, 300)
    kb = common_graph(ROOT / "data")
    vs = generate_vignettes(kb, n, a.seed, salt="benchmark")
    systems = [BayesTriage(kb), KeywordTriage(kb)]
    rate = {}
    for s in systems:
        s.triage(vs[0].text)   # warm-up: jieba's dictionary, the scrubber's gazetteers
        t0 = time.perf_counter()
        df = run_vignettes(s, vs)
        dt = time.perf_counter() - t0
        rate[s.name] = n / dt
        m = summarise(df)
        f = lambda c: f"{c['estimate']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]"
        print(f"{s.name:12s} {n / dt:8.1f} vignettes/s   top-1 {f(m['top1'])}   top-3 {f(m['top3'])}   under-triage {f(m['under_triage'])}")
    print(f"speed ratio medwb_bayes / keyword: {rate['medwb_bayes'] / rate['keyword']:.2f}")
    b = systems[0]
    reads = [b.read(v.text) for v in vs[:200]]
    for pol in ("information_gain", "random"):
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for r in reads: choose_question(b.ranker, r.present, r.absent, [], pol, rng)
        print(f"choose one question ({pol:16s}): {(time.perf_counter() - t0) / len(reads) * 1000:.3f} ms")
    q = questioning(b, vs[:nq], 10, 0.8)
    print(questioning_summary(q, 10).round(3).to_string())
    p = questioning_paired(q, "information_gain", "random")
    print(f"turns to top-1, information gain − random: {p['mean_difference']:+.2f} [{p['lo']:+.2f}, {p['hi']:+.2f}], Wilcoxon p = {p['p_value']:.2g}")


if __name__ == "__main__":
    main()

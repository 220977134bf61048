"""Structured records: speed and correctness of medwb's rule extractor against its no-context baseline, measured in the
same run on the same generated notes, and the cost of each stage of a record.

    .venv/bin/python benchmarks/records.py              # 1000 generated notes + the hand-written set
    .venv/bin/python benchmarks/records.py --notes 200

Prints, per extractor: notes per second of `extract` (scrubbing, sections, concepts, values, context; after a warm-up so
imports, jieba's and spaCy's pipelines and the gazetteers are not counted), code and negation F1 with 95% intervals; the
speed ratio rules / no-context (what negation, uncertainty and history cost); then milliseconds per note of the stages
after extraction (Bundle, validation with fhir.resources, completion, a stored revision) and their ratio to extraction.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notes", type=int, default=1000, help="generated notes (seeded)")
    ap.add_argument("--seed", type=int, default=7, help="seed of the generated notes")
    a = ap.parse_args()
    n = a.notes
    from medwb.scenarios.terms import terminology
    from medwb.scenarios.extract import RuleExtractor, NoContextExtractor
    from medwb.scenarios.fhir import to_bundle, validate_bundle, bundle_json
    from medwb.scenarios.complete import suggest
    from medwb.scenarios.recordstore import RecordStore
    from medwb.scenarios.notes import generate_notes, handwritten_notes
    from medwb.scenarios.recordeval import score_notes, field_scores
    from medwb.scenarios.normalise import scrub_text
    T = terminology(ROOT / "data")
    notes = generate_notes(T, n, a.seed)
    rate, exs = {}, None
    for X in (RuleExtractor(T), NoContextExtractor(T)):
        scrub_text.cache_clear()   # both extractors scrub every note: the cache the report shares between them is not counted
        X.extract(notes[0].text); X.extract(notes[1].text)   # warm-up
        t0 = time.perf_counter()
        got = [X.extract(m.text) for m in notes]
        dt = time.perf_counter() - t0
        rate[X.name] = n / dt
        if exs is None: exs = got
        for src, ns in (("generated", notes), ("hand-written", handwritten_notes(ROOT / "data"))):
            rows, _ = score_notes(X, T, ns)
            sc = field_scores(rows, 1000, 0)
            f = lambda c: f"{c['estimate']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]"
            print(f"{X.name:11s} {src:12s} code F1 {f(sc['code']['f1'])}   negation F1 {f(sc['negation']['f1'])}   temporality F1 {f(sc['temporality']['f1'])}")
        print(f"{X.name:11s} {n / dt:8.1f} notes/s")
    print(f"speed ratio rules / no-context: {rate['rules'] / rate['no-context']:.2f}")
    ext_ms = 1000 / rate["rules"]
    stages = {}
    t0 = time.perf_counter(); bundles = [to_bundle(e, T, f"n{i}") for i, e in enumerate(exs)]; stages["Bundle"] = time.perf_counter() - t0
    t0 = time.perf_counter(); bad = sum(bool(validate_bundle(b)) for b in bundles); stages["validation"] = time.perf_counter() - t0
    t0 = time.perf_counter(); [suggest(e, T) for e in exs]; stages["completion"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        st = RecordStore(d)
        t0 = time.perf_counter()
        for i, b in enumerate(bundles[:200]): st.add(f"n{i}", bundle_json(b), "benchmark", "stored")
        stages["stored revision"] = (time.perf_counter() - t0) * n / min(n, 200)
    print(f"extraction {ext_ms:.2f} ms/note; {bad} of {n} Bundles invalid")
    for k, v in stages.items(): print(f"{k:16s} {v / n * 1000:7.2f} ms/note   ratio to extraction {v / n * 1000 / ext_ms:.2f}")


if __name__ == "__main__":
    main()

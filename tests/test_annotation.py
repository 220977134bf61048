"""Annotation quality control (clause 5.1.4.2): agreement statistics against known answers, merging and
adjudication rules, the audit sample, and every bad input refused with a message that names the problem."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from medwb.data.annotation import adjudicate, annotation_qc, audit_sample, fleiss, kappa_interpretation, label_matrix, majority_mask, majority_vote, mask_dice, pairwise_dice, pairwise_kappa, simulate_annotations, simulate_masks
from medwb.core.settings import MedwbError


def long(rows: dict) -> pd.DataFrame:
    "Long-format annotations from {annotator: [labels...]} (item i gets the i-th label; None: not labelled)."
    return pd.DataFrame([{"item": i, "annotator": a, "label": lab}
                         for a, labels in rows.items() for i, lab in enumerate(labels) if lab is not None])


@pytest.fixture(scope="module")
def truth() -> pd.Series:
    rng = np.random.default_rng(1)
    return pd.Series(np.where(rng.random(1500) < 0.3, "disease", "healthy"), index=[f"c{i}" for i in range(1500)])


@pytest.fixture(scope="module")
def sim(truth) -> pd.DataFrame:
    return simulate_annotations(truth, 3, (0.05, 0.1, 0.2), seed=0)


# --- bad input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [label_matrix, pairwise_kappa, fleiss, majority_vote, adjudicate, annotation_qc])
def test_missing_column_is_named(fn):
    df = long({"A": [0, 1], "B": [0, 1]}).rename(columns={"annotator": "reader"})
    with pytest.raises(MedwbError, match="no column 'annotator'.*columns: item, reader, label"):
        fn(df)


def test_configurable_column_names():
    df = long({"A": [0, 1, 1], "B": [0, 1, 0]}).rename(columns={"item": "image", "annotator": "reader", "label": "grade"})
    names = dict(item="image", annotator="reader", label="grade")
    assert label_matrix(df, **names).shape == (3, 2)
    assert pairwise_kappa(df, **names).n_items[0] == 3
    assert majority_vote(df, **names).tie.tolist() == [False, False, True]
    assert annotation_qc(df, **names)["n_items"] == 3


@pytest.mark.parametrize("df", [pd.DataFrame(columns=["item", "annotator", "label"]),
                                pd.DataFrame({"item": [1, 2], "annotator": ["A", "B"], "label": [np.nan, None]})])
def test_empty_annotations(df):
    with pytest.raises(MedwbError, match="annotations are empty"):
        label_matrix(df)


def test_not_a_dataframe():
    with pytest.raises(MedwbError, match="must be a DataFrame"):
        label_matrix([("x", "A", 1)])


def test_conflicting_duplicate_names_item_and_annotator():
    df = pd.concat([long({"A": [0, 1], "B": [0, 1]}),
                    pd.DataFrame({"item": [1], "annotator": ["B"], "label": [0]})])
    with pytest.raises(MedwbError, match=r"annotator 'B' gave item 1 different labels \[1, 0\]"):
        label_matrix(df)
    for fn in (pairwise_kappa, majority_vote, annotation_qc):
        with pytest.raises(MedwbError, match="annotator 'B' gave item 1"):
            fn(df)


def test_exact_duplicate_is_harmless():
    df = long({"A": [0, 1], "B": [0, 1]})
    assert label_matrix(pd.concat([df, df.iloc[:1]])).equals(label_matrix(df))


def test_one_annotator_only():
    with pytest.raises(MedwbError, match=r"only one annotator \('A'\)"):
        label_matrix(long({"A": [0, 1, 2]}))
    with pytest.raises(MedwbError, match="only one annotator"):   # B's rows have no label
        label_matrix(long({"A": [0, 1], "B": [np.nan, np.nan]}))


def test_missing_ids_refused():
    df = long({"A": [0, 1], "B": [0, 1]})
    df.loc[0, "annotator"] = None
    with pytest.raises(MedwbError, match="1 annotation rows have no 'item' or no 'annotator'"):
        label_matrix(df)


def test_mask_shape_mismatch_names_both_shapes():
    with pytest.raises(MedwbError, match=r"a is \(8, 8\), b is \(8, 9\)"):
        mask_dice(np.ones((8, 8)), np.ones((8, 9)))
    with pytest.raises(MedwbError, match=r"item 'x', annotators 'A' and 'B'.*\(4, 4\).*\(5, 5\)"):
        pairwise_dice({"A": {"x": np.ones((4, 4))}, "B": {"x": np.ones((5, 5))}})
    with pytest.raises(MedwbError, match=r"masks differ in shape: \(4, 4\), \(5, 5\)"):
        majority_mask([np.ones((4, 4)), np.ones((5, 5)), np.ones((4, 4))])


def test_mask_bad_values_and_counts():
    with pytest.raises(MedwbError, match="not binary"):
        mask_dice(np.full((3, 3), 0.5), np.ones((3, 3)))
    with pytest.raises(MedwbError, match="at least 2 annotators"):
        pairwise_dice({"A": {"x": np.ones((3, 3))}})
    with pytest.raises(MedwbError, match="at least one mask"):
        majority_mask([])


def test_bad_parameters():
    df = long({"A": [0, 1, 2], "B": [0, 1, 1]})
    with pytest.raises(MedwbError, match="weights must be"):
        pairwise_kappa(df, weights="cubic")
    with pytest.raises(MedwbError, match="not among the categories"):
        pairwise_kappa(df, categories=[0, 1])
    with pytest.raises(MedwbError, match="threshold must be in"):
        adjudicate(df, threshold=1.5)
    with pytest.raises(MedwbError, match="expert must be"):
        adjudicate(df, expert=[1, 2])
    with pytest.raises(MedwbError, match="no annotator labelled"):
        adjudicate(df, expert={"2": 1})                       # '2' is not item 2
    with pytest.raises(MedwbError, match="gave item 2 more than one label"):
        adjudicate(df, expert=pd.DataFrame({"item": [2, 2], "label": [1, 2]}))
    with pytest.raises(MedwbError, match="expert table needs columns 'item' and 'label'"):
        adjudicate(df, expert=pd.DataFrame({"case": [2], "label": [1]}))
    with pytest.raises(MedwbError, match="merged has no column"):
        audit_sample(df)
    with pytest.raises(MedwbError, match="disagreement_weight"):
        audit_sample(majority_vote(df), disagreement_weight=0.5)
    with pytest.raises(MedwbError, match="error_rates has 3 values for n_annotators=2"):
        simulate_annotations([0, 1], n_annotators=2)
    with pytest.raises(MedwbError, match="at least 2 categories"):
        simulate_annotations([1, 1, 1])


def test_fleiss_without_complete_items():
    df = long({"A": [0, 1, None, None], "B": [None, None, 1, 0], "C": [0, 1, 1, 0]})
    with pytest.raises(MedwbError, match="no item was labelled by all 3 annotators"):
        fleiss(df)
    qc = annotation_qc(df)                                    # the rest of the report stands
    assert "no item was labelled by all" in qc["fleiss"]["error"] and qc["n_items"] == 4


# --- kappa ------------------------------------------------------------------------------------------------

def test_kappa_perfect_pair_and_random_raters():
    assert pairwise_kappa(long({"A": [0, 1, 2, 1, 0], "B": [0, 1, 2, 1, 0]})).kappa[0] == 1.0
    r = np.random.default_rng(11)
    k = pairwise_kappa(long({"A": r.integers(0, 3, 3000).tolist(), "B": r.integers(0, 3, 3000).tolist()})).iloc[0]
    assert abs(k.kappa) < 0.1 and abs(k.agreement - 1 / 3) < 0.05


def test_kappa_pairwise_exclusion_and_sklearn():
    a, b, c = [0, 1, 1, 0, 1, 0], [0, 1, 0, 0, 1, None], [None, 1, 1, 1, 0, 0]
    pk = pairwise_kappa(long({"A": a, "B": b, "C": c}))
    assert pk.n_items.tolist() == [5, 5, 4]
    assert pk.kappa[0] == pytest.approx(cohen_kappa_score(a[:5], b[:5]))
    assert pk.kappa[1] == pytest.approx(cohen_kappa_score(a[1:], c[1:]))
    assert pk.agreement.tolist() == pytest.approx([4 / 5, 3 / 5, 1 / 4])


def test_kappa_no_shared_items_and_single_label():
    pk = pairwise_kappa(long({"A": [0, 1, None, None], "B": [None, None, 1, 0], "C": [1, 1, 1, 1]}))
    assert pk.n_items[0] == 0 and np.isnan(pk.kappa[0]) and np.isnan(pk.agreement[0])
    same = pairwise_kappa(long({"A": [1, 1, 1], "B": [1, 1, 1]}))   # one label between them: undefined, no warning
    assert np.isnan(same.kappa[0]) and same.agreement[0] == 1.0


def test_weighted_kappa_with_category_order():
    grades = ["mild", "moderate", "severe"]
    a, b = ["mild", "moderate", "severe", "mild", "severe"], ["moderate", "moderate", "moderate", "mild", "severe"]
    kq = pairwise_kappa(long({"A": a, "B": b}), weights="quadratic", categories=grades).kappa[0]
    assert kq == pytest.approx(cohen_kappa_score(a, b, weights="quadratic", labels=grades))
    assert kq > pairwise_kappa(long({"A": a, "B": b})).kappa[0]


def test_simulated_error_rates_and_kappa_order(sim, truth):
    m = label_matrix(sim)
    err = [(m[a] != truth).mean() for a in m.columns]
    assert err == pytest.approx([0.05, 0.1, 0.2], abs=0.03)
    assert pairwise_kappa(sim).kappa.is_monotonic_decreasing


def test_fleiss_wikipedia_example():
    counts = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                       [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    df = pd.DataFrame([{"item": i, "annotator": f"r{r}", "label": lab} for i, row in enumerate(counts)
                       for r, lab in enumerate(np.repeat(np.arange(1, 6), row))])
    f = fleiss(df)
    assert round(f["kappa"], 3) == 0.210 and f["kappa"] == pytest.approx(0.20993, abs=1e-5)
    assert (f["n_items"], f["n_raters"], f["categories"], f["n_excluded"]) == (10, 14, [1, 2, 3, 4, 5], 0)
    assert f["interpretation"] == "fair"


def test_fleiss_excludes_incomplete_items():
    f = fleiss(long({"A": [0, 1, 1, 0], "B": [0, 1, 0, 0], "C": [0, 1, 1, None]}))
    assert (f["n_items"], f["n_excluded"], f["n_raters"]) == (3, 1, 3)


def test_kappa_interpretation_bands():
    assert [kappa_interpretation(k) for k in (-0.01, 0.0, 0.2, 0.3, 0.6, 0.61, 0.8, 0.95, None)] == \
        ["poor", "slight", "slight", "fair", "moderate", "substantial", "substantial", "almost perfect", "undefined"]


# --- majority vote and adjudication -----------------------------------------------------------------------

def test_majority_vote_ties_are_not_broken():
    mv = majority_vote(long({"A": [0, 1, 2, 0], "B": [0, 1, 1, 1], "C": [1, 0, 0, None]}))
    assert mv.label.tolist() == [0, 1, None, None]
    assert mv.tie.tolist() == [False, False, True, True]
    assert mv.votes.tolist() == [2, 2, 1, 1] and mv.n_annotators.tolist() == [3, 3, 3, 2]
    assert mv.agreement.tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 3, 1 / 2])


def test_majority_beats_worst_annotator(sim, truth):
    m = label_matrix(sim)
    acc_majority = (majority_vote(sim).set_index("item").label == truth).mean()
    worst = min((m[a] == truth).mean() for a in m.columns)
    best = max((m[a] == truth).mean() for a in m.columns)
    assert acc_majority > worst + 0.1 and acc_majority > best


def test_expert_used_only_where_needed():
    df = long({"A": ["n", "p", "p", "n", "p"], "B": ["n", "p", "n", "n", None], "C": ["n", "n", "x", "n", None]})
    # item 0: 3/3, item 1: 2/3, item 2: tie, item 3: 3/3, item 4: a single annotator (< min_annotators)
    expert = {0: "p", 1: "p", 2: "x", 4: "n"}
    merged, summary = adjudicate(df, expert)
    assert merged.source.tolist() == ["majority", "majority", "expert", "majority", "expert"]
    assert merged.label.tolist() == ["n", "p", "x", "n", "n"]        # the expert's "p" on item 0 is not used
    assert (summary["majority"], summary["expert"], summary["unresolved"], summary["expert_disagrees"]) == (3, 2, 0, 1)
    m2, s2 = adjudicate(df, {2: "x"})
    assert m2.source.tolist() == ["majority", "majority", "expert", "majority", "unresolved"] and m2.label[4] is None
    assert adjudicate(df, expert, threshold=1.0)[0].source.tolist() == ["majority", "expert", "expert", "majority", "expert"]
    assert adjudicate(df, pd.DataFrame({"item": [2], "label": ["x"]}))[0].label[2] == "x"   # DataFrame form
    assert adjudicate(df, pd.Series({2: "x"}))[0].label[2] == "x"                          # Series form


def test_adjudication_recovers_truth(truth):
    sim4 = simulate_annotations(truth, 4, (0.05, 0.1, 0.1, 0.3), seed=4)
    merged, _ = adjudicate(sim4)
    need = merged.item[merged.source != "majority"]
    final, summary = adjudicate(sim4, truth[need])
    assert summary["unresolved"] == 0 and summary["expert"] == len(need) > 0
    assert (final.set_index("item").label == truth).mean() > 0.97


# --- masks ------------------------------------------------------------------------------------------------

def test_dice_identical_disjoint_known_overlap_and_empty():
    a = np.zeros((20, 20), bool); a[2:6, 2:12] = True           # 40 pixels
    b = np.zeros((20, 20), bool); b[2:6, 7:17] = True           # 40 pixels, 20 shared
    c = np.zeros((20, 20), bool); c[10:15, 10:15] = True
    assert mask_dice(a, a) == 1.0 and mask_dice(a, c) == 0.0 and mask_dice(a, b) == 0.5
    assert mask_dice(a, b[:, ::-1] * 0) == 0.0                   # one empty mask
    assert mask_dice(np.zeros((3, 3)), np.zeros((3, 3), bool)) == 1.0   # both empty: convention


def test_pairwise_dice_and_majority_mask():
    a = np.zeros((10, 10), bool); a[:5] = True
    b = np.zeros((10, 10), bool); b[:, :5] = True
    masks = {"A": {"x": a, "y": a}, "B": {"x": a, "y": b}, "C": {"y": b}}
    pdice = pairwise_dice(masks)
    assert pdice[["item", "annotator_a", "annotator_b"]].values.tolist() == \
        [["x", "A", "B"], ["y", "A", "B"], ["y", "A", "C"], ["y", "B", "C"]]
    assert pdice.dice.tolist() == [1.0, 0.5, 0.5, 1.0]
    assert (majority_mask([a, b, b]) == b).all()
    assert (majority_mask({"A": a, "B": b}) == (a & b)).all()      # two masks: intersection


def test_simulated_masks_majority_closer_to_truth():
    yy, xx = np.mgrid[:48, :48]
    truth = (yy - 24) ** 2 + (xx - 24) ** 2 <= 100
    gains = []
    for seed in range(6):
        masks = simulate_masks(truth, 5, max_shift=2, seed=seed)
        assert list(masks) == ["ann1", "ann2", "ann3", "ann4", "ann5"]
        assert all(0.5 < mask_dice(m, truth) for m in masks.values())
        gains.append(mask_dice(majority_mask(masks), truth) - np.mean([mask_dice(m, truth) for m in masks.values()]))
    assert np.mean(gains) > 0
    assert all((simulate_masks(truth, 3, seed=1)[k] == simulate_masks(truth, 3, seed=1)[k]).all() for k in ("ann1", "ann3"))


# --- audit sample and the QC record -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def merged4():
    t = pd.Series(np.random.default_rng(5).choice(["a", "b", "c"], 400, p=[.6, .3, .1]))
    return adjudicate(simulate_annotations(t, 4, (0.02, 0.05, 0.1, 0.3), seed=2))[0]


def test_audit_sample_deterministic_and_stratified(merged4):
    s1, s2 = audit_sample(merged4, 40, seed=3), audit_sample(merged4, 40, seed=3)
    pd.testing.assert_frame_equal(s1, s2)
    assert not s1.item.equals(audit_sample(merged4, 40, seed=4).item)
    assert len(s1) == 40 and s1.item.is_unique
    ties = set(merged4.item[merged4.tie])
    assert 0 < len(ties) < 40 and ties <= set(s1.item)
    assert set(s1.why) <= {"tie", "unresolved", "expert decided", "disagreement", "random check"}
    assert (s1.why == "random check").any()
    order = ["tie", "unresolved", "disagreement", "random check"]
    assert s1.why.map(order.index).is_monotonic_increasing
    assert (s1.agreement < 1).mean() > (merged4.agreement < 1).mean()   # disagreement oversampled


def test_audit_sample_limits(merged4):
    n_ties = int(merged4.tie.sum())
    few = audit_sample(merged4, n_ties - 1, seed=0)
    assert len(few) == n_ties - 1 and (few.why == "tie").all()
    assert len(audit_sample(merged4, 0)) == 0
    assert len(audit_sample(merged4, 10_000)) == len(merged4)
    flat = audit_sample(merged4, 40, seed=0, disagreement_weight=1.0)   # no oversampling still audits every tie
    assert set(merged4.item[merged4.tie]) <= set(flat.item)


def test_audit_sample_on_majority_vote_table():
    mv = majority_vote(long({"A": [0, 1, 2, 0, 1], "B": [0, 1, 1, 0, 1], "C": [0, 0, 0, 0, 1]}))
    s = audit_sample(mv, 2, seed=0)
    assert s.why.tolist()[0] == "tie" and s.item.tolist()[0] == 2


def test_audit_marks_expert_decisions():
    df = long({"A": [0, 0, 1, 0], "B": [0, 1, 1, 0], "C": [0, 1, 0, 0], "D": [0, 0, 1, 0]})   # item 1: 2-2 tie
    merged, _ = adjudicate(df, {1: 1}, threshold=0.8)          # item 2 (3/4) falls short: no expert label
    s = audit_sample(merged, 4, seed=0)
    assert dict(zip(s.item, s.why)) == {1: "tie", 2: "unresolved", 0: "random check", 3: "random check"}


def test_annotation_qc_record(sim, truth):
    qc = annotation_qc(sim, n_audit=15, seed=1)
    assert {"n_items", "n_annotators", "annotators", "n_annotations", "labels", "annotators_per_item",
            "pairwise_kappa", "mean_kappa", "kappa_interpretation", "fleiss", "majority", "adjudication",
            "merged", "audit"} <= set(qc)
    assert (qc["n_items"], qc["n_annotators"], qc["n_annotations"]) == (1500, 3, 4500)
    assert qc["labels"] == ["disease", "healthy"] and qc["annotators_per_item"] == {3: 1500}
    assert list(qc["pairwise_kappa"].columns) == ["annotator_a", "annotator_b", "n_items", "kappa", "agreement"]
    assert qc["fleiss"]["interpretation"] == kappa_interpretation(qc["fleiss"]["kappa"])
    assert qc["majority"]["ties"] == 0 and qc["adjudication"]["majority"] == 1500
    assert len(qc["audit"]) == 15
    pd.testing.assert_frame_equal(qc["audit"], annotation_qc(sim, n_audit=15, seed=1)["audit"])


def test_coverage_gives_pairwise_exclusion(truth):
    sparse = simulate_annotations(truth, 3, 0.1, seed=3, coverage=0.6)
    pk = pairwise_kappa(sparse)
    assert pk.n_items.between(0.3 * 1500, 0.45 * 1500).all()
    f = fleiss(sparse)
    assert 0 < f["n_items"] < 1500 and f["n_items"] + f["n_excluded"] == label_matrix(sparse).shape[0]

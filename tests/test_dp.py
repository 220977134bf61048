"""Differential privacy (clause 5.4.1.3, 5.4.3.1): the budget is enforced and exact, DP statistics are calibrated
(unbiased, error shrinking as ε grows), DP-SGD models are accurate, accounted and reproducible, and the
membership-inference audit tells an overfitted model from a DP one.

OpenDP draws noise from the operating system's secure generator, which cannot be seeded: the statistical
tests use fixed data and tolerances of many standard errors (failure probability well below 1e-6)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from medwb.core.settings import MedwbError
from medwb.datasets.builtin import load_dataset
from medwb.privacy.dp import DPMLPClassifier, PrivacyBudget, dp_count, dp_histogram, dp_mean, dp_summary, membership_inference_audit
from medwb.models.features import split_dataset
from medwb.models.zoo import TorchMLPClassifier


# --- the budget ---------------------------------------------------------------------------------------------

def test_spent_budget_is_exact():
    b = PrivacyBudget(1.0, 1e-6, name="cohort")
    for _ in range(10): b.spend(0.1)
    assert b.epsilon_spent == 1.0 and b.epsilon_remaining == 0.0
    b = PrivacyBudget(2.0)
    x = np.random.default_rng(0).uniform(0, 1, 300)
    dp_count(x, 0.25, budget=b); dp_mean(x, (0, 1), 0.5, budget=b); dp_histogram(x, 4, (0, 1), 0.125, budget=b)
    assert b.epsilon_spent == 0.875 and b.epsilon_remaining == 1.125 and b.delta_spent == 0.0
    assert b.ledger["epsilon"].tolist() == [0.25, 0.5, 0.125]
    assert b.ledger["epsilon_spent"].tolist() == [0.25, 0.75, 0.875]
    assert "dp_mean, bounds [0, 1]" in b.ledger["query"].iloc[1]


def test_exhausted_budget_refuses_and_releases_nothing():
    b = PrivacyBudget(1.0, name="cohort")
    x = np.random.default_rng(1).normal(size=100)
    dp_mean(x, (-3, 3), 0.75, budget=b)
    ran = []
    with pytest.raises(MedwbError, match=r"budget of 'cohort' exceeded.*needs ε=0\.5.*spent ε=0\.75 of 1 "
                                         r"\(remaining ε=0\.25\).*nothing was released"):
        b.spend(0.5, query="extra", release=lambda: ran.append(1))
    assert ran == []
    for query in (lambda: dp_mean(x, (-3, 3), 0.5, budget=b), lambda: dp_count(x, 0.3, budget=b),
                  lambda: dp_histogram(x, 3, (-3, 3), 0.26, budget=b)):
        with pytest.raises(MedwbError, match="remaining ε=0.25"): query()
    assert b.epsilon_spent == 0.75 and len(b.ledger) == 1
    assert isinstance(dp_count(x, 0.25, budget=b), int)          # exactly what is left still works
    assert b.epsilon_remaining == 0.0


def test_delta_budget_is_enforced():
    b = PrivacyBudget(10.0, delta_total=1e-5)
    b.spend(1.0, 6e-6, "model A")
    with pytest.raises(MedwbError, match=r"spent δ=6e-06 of 1e-05 \(remaining δ=4e-06\)"): b.spend(1.0, 6e-6, "model B")
    assert b.delta_spent == 6e-6


@pytest.mark.parametrize("call, message", [
    (lambda b: PrivacyBudget(float("inf")), "epsilon_total = inf must be a finite number > 0"),
    (lambda b: PrivacyBudget(1, delta_total=-0.1), "delta_total = -0.1 must be in [0, 1)"),
    (lambda b: dp_mean(np.ones(5), None, 1, budget=b), "needs bounds=(lower, upper), chosen from domain knowledge"),
    (lambda b: dp_mean(np.ones(5), (1, 1), 1, budget=b), "lower < upper"),
    (lambda b: dp_mean(np.ones(5), (0, "x"), 1, budget=b), "must be a pair"),
    (lambda b: dp_mean([1.0, np.nan, np.inf], (0, 2), 1, budget=b), "2 missing or infinite entries"),
    (lambda b: dp_mean(np.ones((3, 2)), (0, 2), 1, budget=b), "one column (1-D), got shape (3, 2)"),
    (lambda b: dp_mean(np.ones(5), (0, 2), 0, budget=b), "epsilon = 0 must be a finite number > 0"),
    (lambda b: dp_mean(np.ones(5), (0, 2), 1, budget="b"), "needs budget=PrivacyBudget"),
    (lambda b: dp_histogram(np.ones(5), 2.5, (0, 2), 1, budget=b), "bins=2.5 must be a positive integer"),
    (lambda b: dp_histogram(np.ones(5), 3, None, 1, budget=b), "needs range=(lower, upper)"),
    (lambda b: dp_histogram(np.ones(5), [0, 1, np.inf], None, 1, budget=b), "finite and strictly increasing"),
    (lambda b: dp_count(5, 1, budget=b), "values must be a column or table, got int"),
])
def test_bad_input_is_refused_before_spending(call, message):
    b = PrivacyBudget(5.0)
    with pytest.raises(MedwbError) as e: call(b)
    assert message in str(e.value)
    assert b.epsilon_spent == 0.0


# --- DP statistics ------------------------------------------------------------------------------------------

def test_dp_mean_unbiased_and_error_shrinks_with_epsilon():
    x = np.random.default_rng(2).normal(50, 10, 1000).clip(0, 100)
    b, reps = PrivacyBudget(1e6), 150
    est = {eps: np.array([dp_mean(x, (0, 100), eps, budget=b) for _ in range(reps)]) for eps in (0.1, 1.0, 10.0)}
    rmse = {}
    for eps, e in est.items():
        # Laplace noise on the sum (scale 100/(ε/2)) and on the count (scale 1/(ε/2)), propagated to the mean
        sd = math.sqrt(2) * math.hypot(100 / (eps / 2), x.mean() / (eps / 2)) / len(x)
        assert abs(e.mean() - x.mean()) < 6 * sd / math.sqrt(reps) + 0.02, (eps, e.mean(), x.mean())
        rmse[eps] = float(np.sqrt(np.mean((e - x.mean()) ** 2)))
        assert 0.5 * sd < rmse[eps] < 1.6 * sd, (eps, rmse[eps], sd)     # noise is there, and calibrated
    assert rmse[0.1] > 4 * rmse[1.0] > 16 * rmse[10.0]
    assert b.epsilon_spent == pytest.approx(reps * 11.1)


def test_dp_mean_clips_to_public_bounds():
    x = np.r_[np.full(500, 10.0), np.full(500, 1000.0)]       # outliers are clipped to the upper bound 20
    b = PrivacyBudget(300.0)
    est = np.mean([dp_mean(x, (0, 20), 10.0, budget=b) for _ in range(20)])
    assert abs(est - 15.0) < 0.2
    assert all(0 <= dp_mean(x[:3], (0, 20), 0.01, budget=b) <= 20 for _ in range(20))   # tiny n: still in bounds


def test_dp_count_is_calibrated():
    b = PrivacyBudget(1e6)
    c = np.array([dp_count(np.zeros(500), 0.5, budget=b) for _ in range(400)])
    assert c.dtype.kind == "i"
    assert abs(c.mean() - 500) < 0.8             # discrete Laplace, scale 2: sd ≈ 2.8, se of the mean ≈ 0.14
    assert 2.2 < c.std() < 3.5


def test_dp_histogram_matches_numpy():
    x = np.r_[np.random.default_rng(3).uniform(0, 10, 3000), [10.0] * 50, [-1.0, 11.0] * 20]
    b = PrivacyBudget(100.0)
    counts, edges = dp_histogram(x, 5, (0, 10), 10.0, budget=b)
    true, true_edges = np.histogram(x, 5, (0, 10))
    np.testing.assert_array_equal(edges, true_edges)
    assert counts.dtype == np.int64 and counts.shape == (5,)
    assert np.abs(counts - true).max() <= 5                   # scale 0.1: |noise| > 5 has probability ~e^-50
    assert true[-1] >= 50                                     # the upper edge is in the last bin, as in numpy
    edge_counts, e2 = dp_histogram(x, [0, 2, 5, 10], None, 10.0, budget=b)
    assert np.abs(edge_counts - np.histogram(x, [0, 2, 5, 10])[0]).max() <= 5
    many = np.array([dp_histogram(x, 5, (0, 10), 0.5, budget=b)[0] for _ in range(60)])
    assert 1.5 < (many - true).std() < 4.0                    # noise of scale 2 per bin, not less


# --- DP-SGD -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def breast_cancer():
    ds = load_dataset("breast_cancer")
    sp = split_dataset(ds, seed=0)
    sc = StandardScaler().fit(ds.X.iloc[sp.train])
    return (sc.transform(ds.X.iloc[sp.train]), ds.y[sp.train], sc.transform(ds.X.iloc[sp.test]), ds.y[sp.test])


@pytest.fixture(scope="module")
def dp_models(breast_cancer):
    Xtr, ytr, _, _ = breast_cancer
    return {eps: DPMLPClassifier(epsilon=eps, delta=1e-5, random_state=0).fit(Xtr, ytr) for eps in (1.0, 8.0)}


def test_dp_sgd_is_accurate_and_within_budget(breast_cancer, dp_models):
    Xtr, ytr, Xte, yte = breast_cancer
    for eps, m in dp_models.items():
        auc = roc_auc_score(yte, m.predict_proba(Xte)[:, 1])
        assert auc > (0.85 if eps == 8 else 0.80), (eps, auc)
        pv = m.privacy_
        assert 0.9 * eps < pv["epsilon"] <= eps and pv["delta"] == 1e-5 and pv["accountant"] == "rdp"
        n_batches = math.ceil(len(Xtr) / 64)
        assert pv["sample_rate"] == 1 / n_batches and pv["steps"] == 20 * n_batches and pv["n_train"] == len(Xtr)
        assert pv["max_grad_norm"] == 1.0 and pv["poisson_sampling"] is True
    assert dp_models[1.0].privacy_["noise_multiplier"] > 3 * dp_models[8.0].privacy_["noise_multiplier"]


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_reported_epsilon_agrees_with_an_independent_accountant(dp_models):
    from opacus.accountants import PRVAccountant, RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier
    pv = dp_models[1.0].privacy_
    sigma = get_noise_multiplier(target_epsilon=1.0, target_delta=1e-5, sample_rate=pv["sample_rate"],
                                 steps=pv["steps"], accountant="rdp")
    assert sigma == pytest.approx(pv["noise_multiplier"], rel=0.02)
    for acc in (RDPAccountant(), PRVAccountant()):
        acc.history = [(pv["noise_multiplier"], pv["sample_rate"], pv["steps"])]
        assert acc.get_epsilon(delta=1e-5) <= 1.0 + 1e-9       # PRV is tighter than RDP, and both are within target


def test_dp_sgd_is_deterministic_for_a_seed(breast_cancer, dp_models):
    Xtr, ytr, Xte, _ = breast_cancer
    again = DPMLPClassifier(epsilon=1.0, delta=1e-5, random_state=0).fit(Xtr, ytr)
    np.testing.assert_array_equal(again.predict_proba(Xte), dp_models[1.0].predict_proba(Xte))
    other = DPMLPClassifier(epsilon=1.0, delta=1e-5, random_state=1).fit(Xtr, ytr)
    assert not np.array_equal(other.predict_proba(Xte), again.predict_proba(Xte))


def test_dp_classifier_follows_the_sklearn_protocol(breast_cancer, dp_models):
    Xtr, ytr, Xte, yte = breast_cancer
    m = dp_models[8.0]
    assert clone(m).get_params() == m.get_params() and not hasattr(clone(m), "privacy_")
    P = m.predict_proba(Xte)
    assert P.shape == (len(Xte), 2) and np.allclose(P.sum(1), 1)
    assert set(m.predict(Xte)) <= {0, 1} and m.classes_.tolist() == [0, 1]
    assert (m.predict(Xte) == yte).mean() > 0.85
    labelled = DPMLPClassifier(epsilon=1.0, epochs=5).fit(Xtr, np.where(ytr == 1, "malignant", "benign"))
    assert labelled.classes_.tolist() == ["benign", "malignant"]
    assert set(labelled.predict(Xte)) <= {"benign", "malignant"}
    with pytest.raises(MedwbError, match="fitted on 30 features"): m.predict_proba(Xte[:, :5])


@pytest.mark.parametrize("params, message", [
    ({"delta": 0.01}, "below 1/n"), ({"accountant": "gdp"}, "choose one of rdp, prv"),
    ({"epochs": 0}, "epochs = 0 must be a positive integer"), ({"batch_size": 10_000}, r"exceeds the \d+ training records"),
    ({"max_grad_norm": -1}, "max_grad_norm = -1"), ({"epsilon": float("nan")}, "epsilon = nan"),
])
def test_dp_classifier_bad_parameters(breast_cancer, params, message):
    Xtr, ytr, _, _ = breast_cancer
    with pytest.raises(MedwbError, match=message): DPMLPClassifier(**params).fit(Xtr, ytr)


def test_dp_classifier_bad_data(breast_cancer):
    Xtr, ytr, _, _ = breast_cancer
    with pytest.raises(MedwbError, match="binary"): DPMLPClassifier().fit(Xtr, np.arange(len(Xtr)) % 3)
    X = Xtr.copy(); X[0, 0] = np.nan
    with pytest.raises(MedwbError, match="missing or infinite"): DPMLPClassifier().fit(X, ytr)


# --- membership-inference audit -----------------------------------------------------------------------------

class _Fixed:
    "A 'fitted' classifier that gives each row the probability in its first column for class 1."
    classes_ = np.array([0, 1])
    def fit(self, X, y): return self
    def predict_proba(self, X): return np.column_stack([1 - X[:, 0], X[:, 0]])
    def predict(self, X): return (X[:, 0] >= 0.5).astype(int)


def test_attack_metrics_on_known_losses():
    y = np.ones(20, dtype=int)
    members, non_members = np.full((20, 1), 0.9), np.r_[np.full(10, 0.9), np.full(10, 0.6)][:, None]
    a = membership_inference_audit({"fixed": _Fixed()}, members, y, non_members, y).loc["fixed"]
    assert a.attack_auc == pytest.approx(0.75)               # half the non-members tie with the members
    assert a.attack_advantage == pytest.approx(0.5) and a.yeom_advantage == pytest.approx(0.5)
    assert a.member_loss == pytest.approx(-math.log(0.9)) and a.non_member_loss == pytest.approx(-(math.log(0.9) + math.log(0.6)) / 2)
    assert np.isnan(a.dp_advantage_bound) and np.isnan(a.epsilon)
    same = membership_inference_audit(_Fixed(), members, y, members, y).iloc[0]
    assert same.attack_auc == 0.5 and same.attack_advantage == 0.0


def test_audit_bad_input():
    X, y = np.full((20, 1), 0.9), np.ones(20, dtype=int)
    with pytest.raises(MedwbError, match=r"labels \[7\] are not among the model's classes \[0, 1\]"):
        membership_inference_audit(_Fixed(), X, np.full(20, 7), X, y)
    with pytest.raises(MedwbError, match="X and y lengths differ"): membership_inference_audit(_Fixed(), X, y[:5], X, y)
    with pytest.raises(MedwbError, match="expected a classifier"): membership_inference_audit({"m": 3}, X, y, X, y)


@pytest.fixture(scope="module")
def overfit_audit():
    "100 members and 100 non-members with 20% flipped labels: an over-trained MLP memorises; DP models cannot."
    ds = load_dataset("breast_cancer")
    sp = split_dataset(ds, seed=0)
    rng = np.random.default_rng(0)
    pool = rng.permutation(np.r_[sp.train, sp.val])
    members, others = pool[:100], pool[100:200]
    y = np.where(rng.random(len(ds.y)) < 0.2, 1 - ds.y, ds.y)
    sc = StandardScaler().fit(ds.X.iloc[members])
    unfitted_dp = DPMLPClassifier(epsilon=1.0, delta=1e-5, batch_size=25, lr=0.05, epochs=30, random_state=0)
    audit = membership_inference_audit(
        {"plain": lambda: TorchMLPClassifier(hidden=(64, 64), epochs=300, lr=1e-2, weight_decay=0.0, batch_size=32,
                                             device="cpu", random_state=0),
         "dp": unfitted_dp},
        sc.transform(ds.X.iloc[members]), y[members], sc.transform(ds.X.iloc[others]), y[others])
    return audit, unfitted_dp


def test_audit_separates_overfitted_from_dp_model(overfit_audit):
    audit, unfitted_dp = overfit_audit
    plain, dp = audit.loc["plain"], audit.loc["dp"]
    print(audit.round(3).to_string())
    # attack AUC of the memorising model: 0.66 with the hashed split's members (above 0.7 with the earlier permutation split)
    assert plain.member_accuracy == 1.0 and plain.attack_auc > 0.6 and plain.attack_advantage > 0.4
    assert plain.attack_auc > dp.attack_auc + 0.1
    assert abs(dp.attack_auc - 0.5) < 0.1 and dp.attack_advantage < 0.2
    assert dp.attack_advantage < dp.dp_advantage_bound == pytest.approx((math.e - 1 + 2e-5) / (math.e + 1), rel=0.01)
    assert dp.non_member_accuracy > 0.65                      # private, but still a model
    assert not hasattr(unfitted_dp, "privacy_")               # an unfitted estimator is cloned, not fitted in place


def test_dp_summary(dp_models, overfit_audit):
    audit, _ = overfit_audit
    s = dp_summary(dp_models[1.0], audit=audit)
    json.dumps(s)
    assert s["epsilon"] == dp_models[1.0].privacy_["epsilon"] <= 1.0
    assert (s["delta"], s["accountant"], s["max_grad_norm"]) == (1e-5, "rdp", 1.0)
    assert s["noise_multiplier"] == dp_models[1.0].privacy_["noise_multiplier"]
    assert s["audit"]["plain"]["attack_auc"] == audit.loc["plain", "attack_auc"]
    assert s["audit"]["plain"]["dp_advantage_bound"] is None and s["audit"]["dp"]["n_members"] == 100
    b = PrivacyBudget(2.0, name="cohort"); dp_count(np.ones(10), 0.5, budget=b)
    sb = dp_summary(b)
    json.dumps(sb)
    assert (sb["epsilon"], sb["epsilon_total"], sb["epsilon_remaining"], sb["scope"]) == (0.5, 2.0, 1.5, "cohort")
    assert sb["queries"][0]["epsilon"] == 0.5 and sb["noise_multiplier"] is None
    with pytest.raises(MedwbError, match="not fitted"): dp_summary(DPMLPClassifier())
    with pytest.raises(MedwbError, match="takes a PrivacyBudget"): dp_summary({"epsilon": 1})
    with pytest.raises(MedwbError, match="audit has no column"): dp_summary(b, audit=audit[["attack_auc"]])

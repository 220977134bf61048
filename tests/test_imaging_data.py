"Synthetic lesion images (clause 6.2.3): determinism, ground-truth masks, known contrast, confounder, MedMNIST npz."
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medwb.core.settings import MedwbError
from medwb.imaging.synthetic import SPLITS, blob_scores, card, local_contrast, make_lesion_images, save_npz, split_indices


@pytest.fixture(scope="module")
def data():
    return make_lesion_images(n=400, size=64, seed=0)


@pytest.fixture(scope="module")
def confounded():
    return make_lesion_images(n=400, size=64, seed=5, confounder=True)


def test_deterministic_for_a_seed_and_different_for_another():
    a, b, c = (make_lesion_images(n=40, seed=s) for s in (7, 7, 8))
    for k in ("images", "masks", "labels"): assert np.array_equal(a[k], b[k])
    assert a["meta"].equals(b["meta"])
    assert not np.array_equal(a["images"], c["images"])


def test_shapes_dtypes_range(data):
    assert data["images"].shape == (400, 1, 64, 64) and data["images"].dtype == np.float32
    assert data["masks"].dtype == np.uint8 and set(np.unique(data["masks"])) <= {0, 1}
    assert 0 <= data["images"].min() and data["images"].max() <= 1
    assert data["labels"].shape == (400,) and set(np.unique(data["labels"])) == {0, 1}
    m = data["meta"]
    assert list(m.id) == list(range(400)) and (m.label.values == data["labels"]).all()
    assert {"n_lesions", "lesion_area_px", "centre_x", "centre_y", "radius", "scanner", "gain", "offset", "marker"} <= set(m.columns)


def test_masks_zero_for_negatives_nonempty_for_positives(data):
    lab, area = data["labels"], data["masks"].reshape(400, -1).sum(1)
    assert (area[lab == 0] == 0).all() and (area[lab == 1] > 0).all()
    m = data["meta"]
    assert (m.lesion_area_px.values == area).all()
    assert set(m.n_lesions[lab == 1]) == {1, 2} and (m.n_lesions[lab == 0] == 0).all()
    assert ((m.radius[lab == 1] >= 3) & (m.radius[lab == 1] <= 9)).all() and m.radius[lab == 0].isna().all()
    # each recorded centre lies inside the mask
    for i in np.flatnonzero(lab)[:50]:
        x, y = data["centres"][i, 0]
        assert data["masks"][i, 0, int(round(y)), int(round(x))] == 1


def test_lesions_differ_from_local_background_by_known_contrast(data):
    les = data["lesions"]
    single = les.groupby("id").filter(lambda g: len(g) == 1)
    rel = np.array([local_contrast(data["images"][i, 0], data["masks"][i, 0]) / data["meta"].gain[i] / c
                    for i, c in zip(single.id, single.contrast)])
    assert len(rel) > 100
    assert (rel > 0).mean() > 0.98          # bright lesions are brighter, dark ones darker
    assert 0.5 < np.median(rel) < 0.95      # about 0.7 × the stated contrast (soft edge)
    assert set(les.polarity) == {-1, 1}


def test_prevalence_within_tolerance():
    for p in (0.2, 0.5):
        lab = make_lesion_images(n=300, seed=11, prevalence=p)["labels"]
        assert abs(lab.mean() - p) < 0.08


def test_confounder_marker(confounded, data):
    m, lab = confounded["meta"], confounded["labels"]
    assert abs(m.marker[lab == 1].mean() - 0.9) < 0.07 and abs(m.marker[lab == 0].mean() - 0.1) < 0.07
    a, b = confounded["params"]["marker_box"]
    assert (confounded["images"][m.marker.values, 0, a:b, a:b] > 0.9).all()
    assert confounded["masks"][:, 0, a:b, a:b].sum() == 0       # never in the mask
    assert not data["meta"].marker.any()                          # absent without confounder=True
    assert roc_auc_score(lab, confounded["images"][:, 0, a:b, a:b].mean((1, 2))) > 0.85


def test_task_learnable_but_not_trivial(data):
    auc = roc_auc_score(data["labels"], blob_scores(data["images"], data["organs"]))
    assert 0.65 < auc < 0.97, auc
    # intensity alone does not give the label away
    assert roc_auc_score(data["labels"], data["images"].mean((1, 2, 3))) < 0.65


def test_npz_medmnist_layout(tmp_path, data):
    p = save_npz(tmp_path / "lesions.npz", data, seed=3)
    z = np.load(p)
    assert sorted(z.files) == sorted(f"{s}_{k}" for s in SPLITS for k in ("images", "labels", "masks"))
    n = {s: len(z[f"{s}_labels"]) for s in SPLITS}
    assert sum(n.values()) == 400 and abs(n["train"] - 280) <= 30 and abs(n["val"] - 60) <= 20   # keyed hash: right in expectation
    for s in SPLITS:
        assert z[f"{s}_images"].dtype == np.uint8 and z[f"{s}_images"].shape == (n[s], 64, 64)
        assert z[f"{s}_labels"].dtype == np.uint8 and z[f"{s}_labels"].shape == (n[s], 1)
        assert z[f"{s}_masks"].dtype == np.uint8 and z[f"{s}_masks"].shape == (n[s], 64, 64)
        assert abs(z[f"{s}_labels"].mean() - data["labels"].mean()) < 0.15   # each class split by the same hash rule
    ix = split_indices(data["labels"], seed=3)
    assert np.array_equal(z["test_masks"], data["masks"][ix["test"], 0])
    assert np.abs(z["test_images"] / 255 - data["images"][ix["test"], 0]).max() <= 0.5 / 255 + 1e-6
    assert set(np.concatenate(list(ix.values()))) == set(range(400))


def test_bad_input_is_refused_and_nothing_overwritten(tmp_path, data):
    for kw in (dict(n=0), dict(size=16), dict(prevalence=1.5), dict(seed="a"), dict(contrast=0)):
        with pytest.raises(MedwbError): make_lesion_images(**kw)
    p = tmp_path / "x.npz"; p.write_bytes(b"old")
    with pytest.raises(MedwbError, match="splits"): save_npz(p, data, splits=(0.5, 0.5, 0.5))
    with pytest.raises(MedwbError, match="missing"): save_npz(p, {"images": data["images"]})
    with pytest.raises(MedwbError, match=r"\.npz"): save_npz(tmp_path / "x.txt", data)
    assert p.read_bytes() == b"old" and sorted(x.name for x in tmp_path.iterdir()) == ["x.npz"]


def test_card():
    c = card(make_lesion_images(n=10, seed=4, confounder=True))
    assert c["synthetic"] is True and c["contains_patient_data"] is False and c["seed"] == 4
    assert c["parameters"]["confounder"] and any("heat-map" in u for u in c["intended_use"])
    assert card()["parameters"] == dict(n=400, size=64, seed=0, prevalence=0.5, confounder=False, contrast=0.15, noise=0.05)

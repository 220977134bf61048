"Imaging explanations (clause 6.2.3, issue 4): heat-map methods, controls, localisation, faithfulness, galleries."
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from medwb.core.settings import MedwbError
from medwb.imaging.synthetic import make_lesion_images, split_indices
from medwb.explain.images import CONTROLS, METHODS, METRICS, attribute, deletion_insertion, gallery, localisation, localisation_summary, map_similarity, random_maps, randomise_weights
from medwb.imaging.networks import TrainConfig, fit, make_network

torch.set_num_threads(1)
FAST = {"occlusion": dict(stride=8), "integrated_gradients": dict(n_steps=4)}


@pytest.fixture(scope="module")
def untrained():
    return make_network("small_cnn", seed=0).eval()


@pytest.fixture(scope="module")
def images():
    return make_lesion_images(6, seed=3)["images"]


@pytest.fixture(scope="module")
def trained():
    "A small_cnn trained on 300 clean images for 10 epochs (~18 s on one thread), and its lesion test images."
    d = make_lesion_images(300, seed=0)
    sp = split_indices(d["labels"], (0.85, 0.15, 0.0), seed=0)
    net = make_network("small_cnn", seed=0)
    fit(net, d["images"][sp["train"]], d["labels"][sp["train"]], d["images"][sp["val"]], d["labels"][sp["val"]],
        config=TrainConfig(epochs=10, seed=0))
    te = make_lesion_images(120, seed=1)
    pos = te["labels"] == 1
    net.zero_grad(set_to_none=True)
    return net, te["images"][pos], te["masks"][pos]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_scaled_non_negative_maps(untrained, images, method):
    a = attribute(untrained, images[:3], method, batch_size=2, **FAST.get(method, {}))
    assert a.shape == (3, 64, 64) and a.dtype == np.float32 and np.isfinite(a).all() and a.min() >= 0
    top = a.reshape(3, -1).max(1)
    assert np.all((np.abs(top - 1) < 1e-6) | (top == 0))
    assert (top == 1).any()


def test_all_zero_evidence_gives_zero_maps_not_nan(images):
    net = make_network("small_cnn", seed=0).eval()
    with torch.no_grad(): net.head[-1].weight[1].zero_()   # the lesion logit no longer depends on the image
    a = attribute(net, images[:2], "gradcam")
    assert np.array_equal(a, np.zeros((2, 64, 64), np.float32))


def test_model_mode_restored_and_no_gradient_left(untrained, images):
    net = make_network("small_cnn", seed=1).train()
    for m in METHODS: attribute(net, images[:2], m, **FAST.get(m, {}))
    assert net.training and all(p.grad is None for p in net.parameters())
    assert not net.features._forward_hooks and not net.features._backward_hooks   # MONAI's hooks went to a copy


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_batched_maps_equal_one_at_a_time(untrained, images, method):
    one = np.concatenate([attribute(untrained, images[i:i + 1], method) for i in range(5)])
    assert np.allclose(one, attribute(untrained, images[:5], method, batch_size=5), atol=1e-5)


def test_bad_input_names_the_problem(untrained, images):
    cases = [(dict(method="lime"), "unknown method 'lime'"),
             (dict(images=images[0]), "must be 4-D"),
             (dict(images=np.repeat(images, 3, 1)), "3 channel(s)"),
             (dict(layer="features.7"), "layer 'features.7'"),
             (dict(target=5), "target 5"),
             (dict(batch_size=0), "batch_size"),
             (dict(n_steps=3), "no option(s) n_steps")]
    for change, msg in cases:
        kw = dict(images=images, method="gradcam") | change
        with pytest.raises(MedwbError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            attribute(untrained, kw.pop("images"), kw.pop("method"), **kw)
    bad = images.copy(); bad[0, 0, 0, 0] = np.nan
    with pytest.raises(MedwbError, match="finite"): attribute(untrained, bad, "gradcam")


def test_localisation_known_answers():
    mk = np.zeros((4, 1, 32, 32), np.uint8); mk[:3, 0, 12:18, 12:18] = 1
    corner = np.zeros((32, 32)); corner[:4, :4] = 1
    near = np.zeros((32, 32)); near[12:18, 12:18] = 0.5; near[12, 19] = 1   # maximum 2 px right of the mask
    maps = np.stack([mk[0, 0].astype(float), corner, near, corner])
    L = localisation(maps, mk)
    assert L.attrs["n_skipped"] == 1 and L.image.tolist() == [0, 1, 2]
    assert L.loc[0, list(METRICS)].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert L.loc[1, list(METRICS)].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert L.loc[2, "pointing_hit"] == 1.0 and localisation(maps, mk, tolerance=0).loc[2, "pointing_hit"] == 0.0
    assert L.loc[2, "share_in_mask"] == pytest.approx(18 / 19)
    assert L.loc[2, "iou_top"] == pytest.approx(35 / 37) and L.loc[2, "dice_top"] == pytest.approx(35 / 36)
    E = localisation(np.zeros((1, 32, 32)), mk[:1])
    assert E.empty_map[0] and E.loc[0, list(METRICS)].sum() == 0
    with pytest.raises(MedwbError, match="maps"): localisation(maps[:2], mk)


def test_random_maps_are_smooth_seeded_and_score_chance():
    r = random_maps((40, 64, 64), seed=0)
    assert r.shape == (40, 64, 64) and r.min() == 0 and np.allclose(r.reshape(40, -1).max(1), 1)
    assert np.array_equal(r, random_maps((40, 64, 64), seed=0)) and not np.array_equal(r, random_maps((40, 64, 64), seed=1))
    assert np.corrcoef(r[:, :, :-1].ravel(), r[:, :, 1:].ravel())[0, 1] > 0.9   # neighbouring pixels agree: smooth
    d = make_lesion_images(40, seed=2, prevalence=1.0)
    L = localisation(r, d["masks"])
    area = d["masks"].reshape(40, -1).mean(1).mean()
    assert abs(L.share_in_mask.mean() - area) < 0.02 and L.pointing_hit.mean() < 0.25


def test_trained_model_beats_random_maps(trained):
    net, X, M = trained
    maps = {"gradcam": {"model": attribute(net, X, "gradcam"), "random map": random_maps(X[:, 0].shape, seed=0)}}
    S = localisation_summary(maps, M, n_boot=300).set_index("control")
    assert list(S.index) == ["model", "random map"] and S.n.tolist() == [len(X)] * 2
    assert {f"{m}{s}" for m in METRICS for s in ("", "_lo", "_hi")} <= set(S.columns)
    mod, rnd = S.loc["model"], S.loc["random map"]
    # measured: pointing 0.62 vs 0.03, share in mask 0.085 vs 0.029 (CIs apart), IoU of top pixels 0.35 vs 0.01
    assert mod.pointing_hit > 0.4 and mod.pointing_hit_lo > rnd.pointing_hit_hi
    assert mod.share_in_mask_lo > rnd.share_in_mask_hi and mod.iou_top > rnd.iou_top + 0.15


def test_randomised_weights_change_every_parameter_and_the_maps(trained):
    net, X, M = trained
    rnd = randomise_weights(net, seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    again = randomise_weights(net, seed=0)
    assert all(not torch.equal(p, q) for p, q in zip(net.parameters(), rnd.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(rnd.parameters(), again.parameters()))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    a, b = attribute(net, X, "gradcam"), attribute(rnd, X, "gradcam")
    assert np.allclose(map_similarity(a, a), 1)
    sim = map_similarity(a, b)
    assert np.nanmean(sim) < 0.4                                   # measured 0.18
    S = localisation_summary({"gradcam": {"model": a, "randomised weights": b}}, M, n_boot=200).set_index("control")
    assert S.loc["randomised weights", "spearman_vs_model"] == pytest.approx(np.nanmean(sim))
    with pytest.raises(MedwbError, match="unknown control"): localisation_summary({"gradcam": {"other": a}}, M)
    assert CONTROLS == ("model", "random map", "randomised weights")


def test_deletion_below_random_and_insertion_above(trained):
    net, X, M = trained
    D = deletion_insertion(net, X[:30], attribute(net, X[:30], "gradcam"), steps=8)
    assert len(D) == 30 and {"deletion_auc", "insertion_auc", "deletion_auc_random", "insertion_auc_random"} <= set(D.columns)
    assert D.attrs["curves"]["deletion"].shape == (30, 9)
    assert D.deletion_auc.mean() < D.deletion_auc_random.mean() - 0.1     # measured 0.33 vs 0.60
    assert D.insertion_auc.mean() > D.insertion_auc_random.mean() + 0.1   # measured 0.80 vs 0.59
    with pytest.raises(MedwbError, match="maps"): deletion_insertion(net, X[:3], np.zeros((2, 64, 64)))


def _gids(fig):
    return [ax.get_gid() for ax in fig.axes if ax.get_gid()]


def test_gallery_order_titles_and_empty_groups():
    import matplotlib.pyplot as plt
    n = 7
    img = np.zeros((n, 1, 32, 32), np.float32); maps = np.zeros((n, 32, 32), np.float32)
    y = np.array([1, 1, 1, 0, 1, 1, 0]); p = np.array([0.3, 0.1, 0.45, 0.2, 0.9, 0.95, 0.1])
    fig = gallery(img, maps, y, p, 0.5, n_per_group=3, title="t")
    assert _gids(fig) == ["fn:1", "fn:0", "fn:2", "fp:none", "tp:5", "tp:4"]   # FN first, most confident miss first
    titles = [ax.get_title() for ax in fig.axes if (ax.get_gid() or "").startswith("fn:")]
    assert titles[0] == "truth: lesion\npredicted: no lesion · p = 0.10"
    none = [ax for ax in fig.axes if ax.get_gid() == "fp:none"][0]
    assert [t.get_text() for t in none.texts] == ["none"]
    assert min(fig.get_size_inches() / 3) >= 2.4 - 1e-9   # tiles of at least 2.4 in
    fig2 = gallery(img, maps, np.array([0, 0, 0, 0, 1, 0, 0]), np.array([0.6, 0.9, 0.7, 0.1, 0.8, 0.2, 0.3]), 0.5,
                   masks=np.zeros((n, 32, 32)), n_per_group=2)
    assert _gids(fig2) == ["fn:none", "fp:1", "fp:2", "tp:4"]
    with pytest.raises(MedwbError, match="same N images"): gallery(img, maps[:3], y, p, 0.5)
    plt.close("all")

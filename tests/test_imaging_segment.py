"Lesion segmentation after the network (clause 6.2.3.2.4-5): post-processing, Dice/IoU, detection counts, lesion table, figure."
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import ndimage as ndi
from skimage.measure import label

from medwb.core.settings import MedwbError
from medwb.imaging.synthetic import make_lesion_images
from medwb.imaging.segmentation import LESION_COLUMNS, draw_annotations, lesion_table, postprocess, segmentation_metrics, segmentation_summary


@pytest.fixture(scope="module")
def data():
    return make_lesion_images(n=60, size=64, seed=3)


def _specks(masks, seed=0, k=3, side=2):
    "0.95 on the masks, 0.05 elsewhere, plus k specks of side x side px (p = 0.8) away from lesions and each other."
    rng = np.random.default_rng(seed)
    prob = np.where(masks > 0, 0.95, 0.05).astype(np.float32)
    for i in range(len(masks)):
        free = ~ndi.binary_dilation(masks[i, 0] > 0, iterations=side + 2)
        placed = 0
        while placed < k:
            y, x = rng.integers(2, masks.shape[-1] - side - 2, 2)
            if free[y - 2:y + side + 2, x - 2:x + side + 2].all():
                prob[i, 0, y:y + side, x:x + side] = 0.8
                free[y - 2:y + side + 2, x - 2:x + side + 2] = False
                placed += 1
    return prob


def _ncomp(m):
    return label(m, connectivity=2).max()


# ---------------------------------------------------------------- postprocess

def test_postprocess_removes_specks_and_keeps_lesions(data):
    prob = _specks(data["masks"], seed=1)
    out = postprocess(prob, min_size=10)
    assert out.dtype == np.uint8 and out.shape == data["masks"].shape
    assert np.array_equal(out, data["masks"])
    raw = postprocess(prob, min_size=0)
    assert [_ncomp(raw[i, 0]) - _ncomp(data["masks"][i, 0]) for i in range(len(raw))] == [3] * len(raw)
    # a speck of exactly min_size pixels stays, one pixel fewer goes
    assert _ncomp(postprocess(prob, min_size=4)[0, 0]) == _ncomp(data["masks"][0, 0]) + 3
    assert _ncomp(postprocess(prob, min_size=5)[0, 0]) == _ncomp(data["masks"][0, 0])


def test_postprocess_threshold_shapes_keep_and_fill():
    p = np.zeros((12, 12), np.float32); p[2:5, 2:5] = 0.6; p[7:11, 7:11] = 0.4
    assert postprocess(p, min_size=0).sum() == 9
    assert postprocess(p, threshold=0.4, min_size=0).sum() == 9 + 16          # >= threshold
    assert postprocess(p, threshold=0.3, min_size=0, keep=1).sum() == 16      # the larger of two
    assert postprocess(p[None]).shape == (1, 12, 12) and postprocess(p[None, None]).shape == (1, 1, 12, 12)
    ring = np.zeros((20, 20), np.float32); ring[5:15, 5:15] = 1; ring[8:12, 8:12] = 0
    assert postprocess(ring).sum() == 84 and postprocess(ring, fill_holes=True).sum() == 100
    diag = np.zeros((6, 6), np.float32); diag[1, 1] = diag[2, 2] = diag[3, 3] = 1   # 8-connected: one object of 3 px
    assert postprocess(diag, min_size=3).sum() == 3 and postprocess(diag, min_size=4).sum() == 0
    assert postprocess(np.zeros((3, 1, 8, 8), np.float32)).sum() == 0


@pytest.mark.parametrize("prob, kw, match", [
    (np.full((4, 4), np.nan), {}, "NaN"),
    (np.full((4, 4), np.inf), {}, "infinite"),
    (np.full((2, 1, 4, 4), 3.0), {}, "sigmoid"),
    (np.full((4, 4), -0.1), {}, "[0, 1]"),
    (np.zeros((2, 2, 4, 4)), {}, "(2, 2, 4, 4)"),
    (np.zeros((1, 1, 1, 4, 4)), {}, "shape"),
    (np.zeros((0, 1, 4, 4)), {}, "empty"),
    (np.array([["a"]]), {}, "numeric"),
    (np.zeros((4, 4)), {"threshold": 0}, "threshold"),
    (np.zeros((4, 4)), {"threshold": 1.2}, "threshold"),
    (np.zeros((4, 4)), {"min_size": -1}, "min_size"),
    (np.zeros((4, 4)), {"min_size": 2.5}, "min_size"),
    (np.zeros((4, 4)), {"keep": 0}, "keep"),
])
def test_postprocess_bad_input(prob, kw, match):
    with pytest.raises(MedwbError, match=None) as e: postprocess(prob, **kw)
    assert match in str(e.value) and "postprocess" in str(e.value)


# ---------------------------------------------------------------- metrics

def _squares():
    t = np.zeros((6, 1, 16, 16), np.uint8); p = np.zeros_like(t)
    t[0, 0, 2:6, 2:6] = p[0, 0, 2:6, 2:6] = 1          # perfect
    t[1, 0, 2:6, 2:6] = 1; p[1, 0, 9:13, 9:13] = 1    # disjoint
    t[2, 0, 2:6, 2:6] = 1; p[2, 0, 2:6, 4:8] = 1      # half overlap
    p[4, 0, 0, 0] = 1                                  # 3: empty/empty; 4: empty truth, one false pixel
    t[5, 0, 2:10, 2:10] = 1; p[5, 0, 2:10, 2:6] = 1   # prediction inside the truth: Dice 2*32/(64+32), IoU 1/2
    return p, t


def test_dice_iou_known_answers():
    m = segmentation_metrics(*_squares())
    assert np.allclose(m.dice, [1, 0, 0.5, 1, 0, 2 / 3]) and np.allclose(m.iou, [1, 0, 1 / 3, 1, 0, 0.5])
    assert m.has_lesion.tolist() == [True, True, True, False, False, True]
    assert m.truth_px.tolist() == [16, 16, 16, 0, 0, 64] and m.pred_px.tolist() == [16, 16, 16, 0, 1, 32]
    assert list(m.id) == list(range(6))
    assert segmentation_metrics(*_squares(), ids=list("abcdef")).id.tolist() == list("abcdef")


def test_lesion_detection_counts():
    t = np.zeros((30, 30), np.uint8); p = np.zeros_like(t)
    t[2:8, 2:8] = 1; t[20:26, 2:8] = 1; t[2:8, 20:26] = 1    # three true lesions
    p[3:9, 3:9] = 1                                          # finds lesion 1
    p[20:22, 2:3] = 1                                        # 2 px on lesion 2: IoU 2/36 < 0.1, so missed and false
    p[15:18, 15:18] = 1                                      # a false lesion
    m = segmentation_metrics(p, t).iloc[0]
    assert (m.true_lesions, m.found, m.missed, m.pred_lesions, m.false_lesions) == (3, 1, 2, 3, 2)
    m0 = segmentation_metrics(p, t, min_iou=0).iloc[0]      # any overlap counts
    assert (m0.found, m0.missed, m0.false_lesions) == (2, 1, 1)
    big = np.zeros_like(t); big[0:28, 0:10] = 1               # one blob over two lesions: IoU 36/280 each
    mb = segmentation_metrics(big, t).iloc[0]
    assert (mb.found, mb.missed, mb.pred_lesions, mb.false_lesions) == (2, 1, 1, 0)


def test_metrics_on_generated_data(data):
    prob = _specks(data["masks"], seed=2)
    clean, raw = segmentation_metrics(postprocess(prob), data["masks"]), segmentation_metrics(postprocess(prob, min_size=0), data["masks"])
    assert (clean.dice == 1).all() and clean.missed.sum() == 0 and clean.false_lesions.sum() == 0
    assert (raw.false_lesions == 3).all() and (raw.dice[~raw.has_lesion] == 0).all()
    a = raw.truth_px[raw.has_lesion].to_numpy()
    assert np.allclose(raw.dice[raw.has_lesion], 2 * a / (2 * a + 12))


def test_metrics_bad_input(data):
    m = data["masks"]
    with pytest.raises(MedwbError, match=r"pred \(10, 1, 64, 64\) and truth \(9, 1, 64, 64\)"): segmentation_metrics(m[:10], m[:9])
    with pytest.raises(MedwbError, match="binary"): segmentation_metrics(m * 0.5, m)
    with pytest.raises(MedwbError, match="empty"): segmentation_metrics(np.zeros((0, 8, 8)), np.zeros((0, 8, 8)))
    with pytest.raises(MedwbError, match="min_iou"): segmentation_metrics(m, m, min_iou=2)
    with pytest.raises(MedwbError, match="ids"): segmentation_metrics(m, m, ids=[1, 2])


# ---------------------------------------------------------------- summary

def test_summary_known_answers():
    s = segmentation_summary(segmentation_metrics(*_squares()))
    assert list(s.index) == ["dice", "iou", "empty_fp_rate", "dice_all", "lesion_sensitivity", "false_lesions_per_image"]
    assert np.isclose(s.loc["dice", "estimate"], (1 + 0 + 0.5 + 2 / 3) / 4) and s.loc["dice", "n"] == 4
    assert np.isclose(s.loc["iou", "estimate"], (1 + 0 + 1 / 3 + 0.5) / 4)
    assert s.loc["empty_fp_rate", "estimate"] == 0.5 and s.loc["empty_fp_rate", "n"] == 2
    assert np.isclose(s.loc["dice_all", "estimate"], (1 + 0 + 0.5 + 1 + 0 + 2 / 3) / 6)
    assert s.loc["lesion_sensitivity", "estimate"] == 0.75 and s.loc["lesion_sensitivity", "n"] == 4
    assert np.isclose(s.loc["false_lesions_per_image", "estimate"], 2 / 6)
    for r in s.itertuples(): assert r.lo <= r.estimate + 1e-12 and r.estimate <= r.hi + 1e-12
    assert s.loc["dice", "hi"] - s.loc["dice", "lo"] > 0.2        # four images: a wide interval
    assert segmentation_summary(segmentation_metrics(*_squares()), seed=0).equals(s)   # seeded


def test_summary_interval_narrows_and_handles_no_lesions(data):
    t = data["masks"]
    noisy = np.roll(t, 2, axis=-1)
    s_small = segmentation_summary(segmentation_metrics(noisy[:20], t[:20]))
    s_big = segmentation_summary(segmentation_metrics(noisy, t))
    w = lambda s: s.loc["dice", "hi"] - s.loc["dice", "lo"]
    assert 0.6 < s_big.loc["dice", "estimate"] < 0.95 and w(s_big) < w(s_small)
    neg = ~t.reshape(len(t), -1).any(1)
    s0 = segmentation_summary(segmentation_metrics(t[neg], t[neg]))
    assert np.isnan(s0.loc["dice", "estimate"]) and s0.loc["dice", "n"] == 0
    assert np.isnan(s0.loc["lesion_sensitivity", "estimate"]) and s0.loc["empty_fp_rate", "estimate"] == 0
    with pytest.raises(MedwbError, match="lacks column"): segmentation_summary(pd.DataFrame({"dice": [1.0]}))
    with pytest.raises(MedwbError, match="DataFrame"): segmentation_summary([1, 2])


# ---------------------------------------------------------------- lesion table

def test_lesion_table_on_a_drawn_square():
    m = np.zeros((20, 30), np.uint8); m[4:9, 10:16] = 1                 # rows 4-8, columns 10-15: 30 px
    b = lesion_table(m, spacing=(0.7, 0.5), prob=np.where(m, 0.9, 0.2)).iloc[0]
    assert (b.bbox_x0, b.bbox_y0, b.bbox_x1, b.bbox_y1) == (10, 4, 16, 9)
    assert (b.centroid_x, b.centroid_y, b.area_px) == (12.5, 6.0, 30)
    assert np.isclose(b.area_mm2, 30 * 0.35) and np.isclose(b.diameter_px, np.sqrt(4 * 30 / np.pi))
    assert np.isclose(b.diameter_mm, np.sqrt(4 * 30 * 0.35 / np.pi)) and np.isclose(b.mean_prob, 0.9)
    t = lesion_table(m)
    assert list(t.columns) == LESION_COLUMNS and np.isnan(t.area_mm2[0]) and np.isnan(t.mean_prob[0])
    assert "unknown" in t.attrs["spacing_note"]
    assert lesion_table(m, spacing=0.5).area_mm2[0] == 7.5


def test_lesion_table_numbering_ids_and_empty():
    m = np.zeros((2, 1, 20, 20), np.uint8); m[0, 0, 12:15, 2:5] = 1; m[0, 0, 2:4, 10:14] = 1
    t = lesion_table(m, ids=["a", "b"])
    assert t.id.tolist() == ["a", "a"] and t.lesion.tolist() == [1, 2] and t.area_px.tolist() == [8, 9]   # raster order
    e = lesion_table(np.zeros((3, 8, 8), bool))
    assert len(e) == 0 and list(e.columns) == LESION_COLUMNS


def test_lesion_table_recovers_generator_lesions(data):
    t, L = lesion_table(data["masks"]), data["lesions"]
    assert (t.groupby("id").size().reindex(range(60), fill_value=0) <= data["meta"].n_lesions).all()
    assert t.groupby("id").area_px.sum().reindex(range(60), fill_value=0).tolist() == data["meta"].lesion_area_px.tolist()
    checked = 0
    for i, g in L.groupby("id"):
        xy = g[["centre_x", "centre_y"]].to_numpy()
        if len(g) == 2 and np.hypot(*(xy[0] - xy[1])) <= g.radius.sum() + 2: continue   # may touch: merged
        c = t[t.id == i][["centroid_x", "centroid_y"]].to_numpy()
        assert len(c) == len(g)
        for p in xy: assert np.hypot(*(c - p).T).min() < 1.0
        checked += 1
    assert checked >= 0.75 * L.id.nunique()


def test_lesion_table_spacing_per_image_and_bad_input(data):
    m = data["masks"]
    sp = np.tile([0.7, 0.5], (60, 1)); sp[::2] = 1.0
    t = lesion_table(m, spacing=sp)
    f = np.where(t.id % 2 == 0, 1.0, 0.35)
    assert np.allclose(t.area_mm2, t.area_px * f)
    for bad, match in [((0.7, -1), "positive"), ((1, 2, 3), "(3,)"), (np.ones((5, 2)), "(5, 2)"), ("x", "numbers"),
                       ((np.nan, 1), "positive")]:
        with pytest.raises(MedwbError, match=None) as e: lesion_table(m, spacing=bad)
        assert match in str(e.value)
    with pytest.raises(MedwbError, match="binary"): lesion_table(m * 3)
    with pytest.raises(MedwbError, match="empty"): lesion_table(np.array([]))
    with pytest.raises(MedwbError, match="differ in shape"): lesion_table(m, prob=np.zeros((60, 1, 32, 32)))


# ---------------------------------------------------------------- figure

def test_figure_tiles_labels_and_legend(data):
    img, m = data["images"], data["masks"]
    tab = lesion_table(m, spacing=(0.7, 0.5))
    fig = draw_annotations(img, m, tab, truth=m, n=6, title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    texts = [x.get_text() for ax in fig.axes for x in ax.texts]
    assert sum(x.startswith("L") for x in texts) == tab.id.isin(range(6)).sum()
    assert texts.count("no lesion predicted") == int((~m[:6].reshape(6, -1).any(1)).sum())
    assert all("mm²" in x for x in texts if x.startswith("L"))
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 3
    w, h = fig.get_size_inches()
    assert w / 4 >= 2 and h / 2 >= 2
    assert len(draw_annotations(img[:3], m[:3]).axes) == 3                        # fewer images than n
    assert len(draw_annotations(img, m, indices=[5, 9]).axes) == 2
    f1 = draw_annotations(img[0, 0], m[0, 0])                                     # one (H, W) image, table computed
    assert len(f1.axes) == 1 and not any("mm²" in x.get_text() for x in f1.axes[0].texts)


def test_figure_bad_input(data):
    img, m = data["images"], data["masks"]
    with pytest.raises(MedwbError, match=r"images \(60, 1, 64, 64\) and masks \(60, 1, 64, 32\)"):
        draw_annotations(img, m[..., :32])
    with pytest.raises(MedwbError, match=r"truth \(3, 1, 64, 64\)"): draw_annotations(img[:2], m[:2], truth=m[:3])
    with pytest.raises(MedwbError, match="binary"): draw_annotations(img, img)
    with pytest.raises(MedwbError, match="empty"): draw_annotations(np.zeros((0, 1, 8, 8)), np.zeros((0, 1, 8, 8)))
    with pytest.raises(MedwbError, match="indices"): draw_annotations(img, m, indices=[60])
    with pytest.raises(MedwbError, match="lacks column"): draw_annotations(img, m, pd.DataFrame({"id": [0]}))
    with pytest.raises(MedwbError, match="n must be"): draw_annotations(img, m, n=0)


def test_unet_output_goes_through_the_pipeline(data):
    "The (untrained) U-Net's probability map has the layout postprocess, metrics and the table expect."
    import torch
    from medwb.imaging.networks import make_network, predict
    torch.set_num_threads(1)
    net = make_network("unet", seed=0, channels=(8, 16), strides=(2,))
    prob = predict(net, data["images"][:4])
    assert prob.shape == (4, 1, 64, 64)
    pred = postprocess(prob)
    m = segmentation_metrics(pred, data["masks"][:4])
    assert len(m) == 4 and m.dice.between(0, 1).all()
    t = lesion_table(pred, prob=prob)
    assert (t.mean_prob >= 0.5).all() and (t.area_px >= 10).all()

"The imaging report template through the pipeline, with small parameters: classifier, confounded control, segmenter, bad input."
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROBUSTNESS_SMALL, write_settings
from medwb.core.store import MANIFEST, read_json, verify_manifest
from medwb.core.settings import MedwbError, load_settings
from medwb.run.jobs import build_matrix
from medwb.run.execute import reproduce, run_matrix
from medwb.reports.html import assert_offline

SMALL = {"model.small_cnn": {"epochs": 2, "lr": 0.003}, "model.unet": {"epochs": 2, "lr": 0.01},
         "imaging.tiny": {"generator": "lesions", "n": 100, "spacing": "(0.5, 0.5)"},
         "imaging.tinyc": {"generator": "lesions", "n": 100, "confounder": "True"}, "robustness": ROBUSTNESS_SMALL}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imaging")
    s = write_settings(tmp, {"reports_dir": str(tmp / "reports"), "datasets": "breast_cancer", "models": "dummy",
                             "imaging": "tiny:small_cnn, tinyc:small_cnn, tiny:unet", "n_boot": 200, "jobs": 2}, SMALL)
    settings = load_settings(s)
    return settings, run_matrix(settings, progress=None)


def _report(r) -> tuple[dict, str]:
    p = Path(r["path"])
    return read_json(p / "metrics.json"), (p / "report.html").read_text(encoding="utf-8")


def test_matrix_runs_every_imaging_job(run):
    settings, res = run
    st = {(r["dataset"], r["model"]): r["status"] for r in res}
    assert st == {("breast_cancer", "data"): "ok", ("breast_cancer", "dummy"): "ok", ("tiny", "small_cnn"): "ok",
                  ("tinyc", "small_cnn"): "ok", ("tiny", "unet"): "ok"}, [r.get("error") for r in res]
    for r in res:
        assert verify_manifest(r["path"]) == {"changed": [], "missing": [], "extra": [], "pruned": []}
    assert "tiny" in (settings.reports_dir / "index.html").read_text()


def test_classifier_report(run):
    _, res = run
    [r] = [r for r in res if (r["dataset"], r["model"]) == ("tiny", "small_cnn")]
    m, html = _report(r)
    assert m["task"] == "image_classification" and 0 <= m["metrics"]["roc_auc"] <= 1
    assert m["ci"]["roc_auc"]["lo"] <= m["metrics"]["roc_auc"] <= m["ci"]["roc_auc"]["hi"]
    assert set(m["comparisons"]) == {"blob detector"} and "calibration" in m
    loc = {(x["method"], x["control"]) for x in m["localisation"]}
    assert loc == {(a, b) for a in ("gradcam", "gradcampp", "occlusion", "integrated_gradients")
                   for b in ("model", "random map", "randomised weights")}
    assert "pointing_game" in m["metrics"] and "deletion_auc" in m["faithfulness"]
    assert m["data"]["files"] == {"read": 100, "loaded": 100, "skipped": 0}
    files = set(read_json(Path(r["path"]) / MANIFEST)["files"])
    assert {"figures/gallery_gradcam.png", "figures/methods.png", "figures/learning_curves.png", "checkpoints/best.pt",
            "predictions.csv"} <= files
    assert any(f.startswith("tensorboard/events.out.tfevents") for f in files)
    for s in ("8. Explanations for clinicians", "9. Explanation quality, measured", "missed lesions first", "5. Model and training"):
        assert s in html, s
    assert "shortcut check" in m.get("not_applicable", {})
    assert_offline(html)
    # robustness (12), corruption and OOD (13), compressed variants (14): the grid with its budget and checks, the defences, the variants
    rob = m["robustness"]
    assert {g["attack"] for g in rob["grid"]} == {"fgsm", "pgd", "square", "transfer"} and rob["images"] == rob["of"]   # the whole (small) test part: images = 16 in conftest
    assert {g["eps"] for g in rob["grid"]} == {0.0, 2.0, 8.0} and all(g["queries"] > 0 for g in rob["grid"] if g["attack"] == "square" and g["eps"])
    assert [c["check"] for c in rob["sanity"]][0] == "ε = 0 gives the clean ROC-AUC" and rob["sanity"][0]["passed"] is True
    assert {d["attack"].split(" (")[0] for d in rob["defences"]} >= {"non-adaptive", "adaptive"}
    assert {c["kind"] for c in m["shift"]["curves"]} >= {"noise", "blur", "contrast", "gibbs", "bias_field"}
    assert {o["score"] for o in m["shift"]["ood"]} == {"msp", "energy", "mahalanobis"}
    variants = {v["variant"]: v for v in m["compression"]["variants"]}
    assert {"original", "onnx fp32", "onnx int8 dynamic", "onnx int8 static", "pruned 50%", "distilled"} <= set(variants)
    assert variants["onnx fp32"]["max_abs_dp"] < 1e-4 and variants["onnx int8 static"]["size_ratio"] > 2
    assert {"robustness/attack_grid.csv", "robustness/adversarial_examples.npz", "robustness/shift_curves.csv",
            "figures/attack_grid.png", "figures/adversarial_examples.png", "figures/shift_curves.png"} <= files
    for s in ("12. Robustness", "13. Corruption, shift and out-of-distribution rejection", "14. Compressed variants", "adaptive"):
        assert s in html, s


def test_confounded_control_report_has_the_shortcut_check(run):
    _, res = run
    [r] = [r for r in res if r["dataset"] == "tinyc"]
    m, html = _report(r)
    assert set(m["shortcut"]) == {"roc_auc_with_marker", "roc_auc_without_marker", "n_without_marker"}
    assert "confounded control" in html
    assert m["robustness"]["grid"] and m["compression"]["variants"]   # the control gets its own robustness profile


def test_segmenter_report(run):
    _, res = run
    [r] = [r for r in res if r["model"] == "unet"]
    m, html = _report(r)
    assert m["task"] == "segmentation"
    assert {"dice", "iou", "lesion_sensitivity"} <= set(m["metrics"]) and 0 <= m["metrics"]["dice"] <= 1
    assert {"explanations", "discrimination"} <= set(m["not_applicable"])
    p = Path(r["path"])
    assert (p / "figures" / "lesion_annotations.png").exists() and (p / "segmentation_per_image.csv").exists()
    lesions = (p / "lesions.csv").read_text().splitlines()[0].split(",")
    assert {"area_px", "area_mm2", "centroid_x", "bbox_x0"} <= set(lesions)
    assert "11. Lesion annotations" in html and r["headline"]["dice"] == m["metrics"]["dice"]


def test_rerun_is_cached_and_reproduce_is_identical(run):
    settings, res = run
    again = run_matrix(settings, progress=None)
    assert {r["status"] for r in again} == {"cached"}
    [r] = [r for r in res if (r["dataset"], r["model"]) == ("tiny", "small_cnn")]
    rep = reproduce(r["path"], settings)
    assert rep["identical"], rep["differences"][:5]


def test_folder_dataset_with_bad_files_counts_them(tmp_path):
    from PIL import Image
    from medwb.imaging.synthetic import make_lesion_images
    d = make_lesion_images(60, seed=4)
    img = tmp_path / "imgs"; img.mkdir()
    rows = []
    for i in range(60):
        Image.fromarray((d["images"][i, 0] * 255).astype(np.uint8)).save(img / f"i{i}.png"); rows.append(f"i{i}.png,{d['labels'][i]}")
    (img / "corrupt.png").write_bytes(b"\x89PNG broken")
    rows += ["corrupt.png,1", "missing.png,0"]
    (img / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    before = sorted(p.name for p in img.iterdir())
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "datasets": "breast_cancer", "models": "dummy",
                                  "imaging": "folder:small_cnn", "n_boot": 200},
                       {"model.small_cnn": {"epochs": 1}, "imaging.folder": {"path": str(img), "labels": str(img / "labels.csv")}})
    settings = load_settings(s)
    jobs = [j for j in build_matrix(settings) if j.model == "small_cnn"]
    from medwb.run.execute import run_job
    r = run_job(jobs[0])
    assert r["status"] == "ok", r.get("error")
    m, html = _report(r)
    assert m["data"]["files"] == {"read": 62, "loaded": 60, "skipped": 2}
    assert "corrupt.png" in html and "missing.png" in html
    assert "explanation quality" in m["unavailable"]             # no masks: localisation cannot be measured, and says so
    assert sorted(p.name for p in img.iterdir()) == before      # nothing written into the data folder


def test_dicom_folder_with_masks_trains_a_segmenter_with_spacing_from_the_files(tmp_path):
    "A DICOM export with PNG masks (PixelSpacing 0.8 mm) and two bad rows: the report reads mm² from the files."
    import pandas as pd
    from PIL import Image
    from medwb.imaging.synthetic import make_lesion_images, save_dicom_folder
    from medwb.run.execute import run_job
    dcm = save_dicom_folder(tmp_path / "dicom", make_lesion_images(60, seed=4), spacing=(0.8, 0.8))
    (dcm / "corrupt.dcm").write_bytes(b"not dicom")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(dcm / "tiny_mask.png")
    with open(dcm / "labels.csv", "a") as f: f.write("corrupt.dcm,1,\nimg0003.dcm,1,tiny_mask.png\n")
    table = pd.read_csv(dcm / "labels.csv", keep_default_na=False)
    flipped = table.index[(table.label == 1) & (table["mask"] != "") & (table.file != "img0003.dcm")][0]
    table.loc[flipped, "label"] = 0                                             # an annotation slip: lesion in mask, label 0
    table.to_csv(dcm / "labels.csv", index=False)
    before = {p.name: p.read_bytes() for p in dcm.iterdir()}
    s = write_settings(tmp_path, {"reports_dir": str(tmp_path / "reports"), "datasets": "breast_cancer", "models": "dummy",
                                  "imaging": "scans:unet", "n_boot": 200},
                       {"model.unet": {"epochs": 1}, "imaging.scans": {"path": str(dcm), "labels": str(dcm / "labels.csv")}})
    [job] = [j for j in build_matrix(load_settings(s)) if j.model == "unet"]
    r = run_job(job)
    assert r["status"] == "ok", r.get("error")
    m, html = _report(r)
    assert m["data"]["files"] == {"read": 62, "loaded": 60, "skipped": 2} and m["data"]["spacing"] == [0.8, 0.8]
    assert "corrupt.dcm" in html and "tiny_mask.png: shape (10, 10) does not match image shape (64, 64)" in html
    assert "DICOM images + labels CSV + masks" in html and "DICOM PixelSpacing" in html
    assert f"1 of 60 disagree: 1 labelled 0 with a lesion in the mask ({table.file[flipped]})" in html
    assert "not stated (description = ... in [imaging.scans])" in html and "<td>None</td>" not in html
    lesions = pd.read_csv(Path(r["path"]) / "lesions.csv")
    assert len(lesions) and np.allclose(lesions.area_mm2, lesions.area_px * 0.64), len(lesions)
    assert {p.name: p.read_bytes() for p in dcm.iterdir()} == before            # nothing written into the data folder


def test_bad_imaging_declarations_stop_the_run(tmp_path):
    base = {"reports_dir": str(tmp_path / "reports"), "datasets": "breast_cancer", "models": "dummy"}
    s = write_settings(tmp_path, {**base, "imaging": "lesions:vit"})
    with pytest.raises(MedwbError, match="unknown imaging network 'vit'"): build_matrix(load_settings(s))
    s = write_settings(tmp_path, {**base, "imaging": "nowhere:small_cnn"})
    with pytest.raises(MedwbError, match="unknown imaging dataset 'nowhere'"): build_matrix(load_settings(s))
    (tmp_path / "empty").mkdir()
    s = write_settings(tmp_path, {**base, "imaging": "e:small_cnn"}, {"imaging.e": {"path": str(tmp_path / "empty"), "labels": "l.csv"}})
    with pytest.raises(MedwbError, match="holds no PNG, JPEG or DICOM"): build_matrix(load_settings(s))
    from PIL import Image
    img = tmp_path / "few"; img.mkdir()
    for i in range(6): Image.fromarray(np.full((64, 64), 40 * i, np.uint8)).save(img / f"{i}.png")
    (img / "l.csv").write_text("file,label\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(6)))
    s = write_settings(tmp_path, {**base, "imaging": "f:unet"}, {"imaging.f": {"path": str(img), "labels": str(img / "l.csv")}})
    with pytest.raises(MedwbError, match="f:unet segments, but dataset f has no masks"): build_matrix(load_settings(s))
    s = write_settings(tmp_path, {**base, "imaging": "lesions:small_cnn"}, {"model.small_cnn": {"optimizer": "'lbfgs'"}})
    with pytest.raises(MedwbError, match="optimizer 'lbfgs'"): build_matrix(load_settings(s))

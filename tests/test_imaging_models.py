"MONAI networks, the training loop and the imaging datasets of medwb.imaging_models."
from __future__ import annotations

import numpy as np
import pytest
import torch

from medwb.core.settings import MedwbError
from medwb.imaging.synthetic import make_lesion_images, save_npz, split_indices
from medwb.imaging.networks import NETWORKS, TrainConfig, cam_layer, default_device, fit, make_network, network_task, plot_history, predict, split_params
from medwb.datasets.builtin import load_imaging_dataset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    d = make_lesion_images(80, seed=1)
    return d, split_indices(d["labels"], seed=0)


@pytest.mark.parametrize("name", ["small_cnn", "resnet", "densenet121"])
def test_every_classifier_trains_one_epoch_and_predicts_probabilities(data, name, tmp_path):
    d, sp = data
    net = make_network(name, seed=0)
    h = fit(net, d["images"][sp["train"]], d["labels"][sp["train"]], d["images"][sp["val"]], d["labels"][sp["val"]],
            config=TrainConfig(epochs=1, batch_size=16), out_dir=tmp_path)
    assert len(h.epochs) == 1 and np.isfinite(h.epochs.val_loss).all() and h.device == "cpu"
    p = predict(net, d["images"][:5])
    assert p.shape == (5,) and ((p >= 0) & (p <= 1)).all()
    assert cam_layer(net) in dict(net.named_modules())
    assert (tmp_path / "checkpoints" / "best.pt").exists()


def test_unet_segments_and_keeps_mask_shape(data):
    d, sp = data
    net = make_network("unet")
    h = fit(net, d["images"][sp["train"]], d["masks"][sp["train"]], d["images"][sp["val"]], d["masks"][sp["val"]],
            task="segmentation", config=TrainConfig(epochs=1, lr=1e-2))
    assert predict(net, d["images"][:3]).shape == (3, 1, 64, 64) and network_task("unet") == "segmentation"
    with pytest.raises(MedwbError, match="no Grad-CAM layer"): cam_layer(net)


def test_training_is_deterministic_for_a_seed_and_differs_across_seeds(data):
    d, sp = data
    def run(seed):
        net = make_network("small_cnn", seed=seed)
        h = fit(net, d["images"][sp["train"]], d["labels"][sp["train"]], d["images"][sp["val"]], d["labels"][sp["val"]],
                config=TrainConfig(epochs=2, seed=seed))
        return h.epochs.val_loss.to_numpy(), predict(net, d["images"][sp["val"]])
    (a, pa), (b, pb), (c, pc) = run(0), run(0), run(1)
    assert np.array_equal(a, b) and np.array_equal(pa, pb)
    assert not np.array_equal(pa, pc)


def test_learning_curve_figure(data):
    d, sp = data
    h = fit(make_network("small_cnn"), d["images"][sp["train"]], d["labels"][sp["train"]], d["images"][sp["val"]],
            d["labels"][sp["val"]], config=TrainConfig(epochs=2, schedule="plateau", optimizer="rmsprop"))
    fig = plot_history(h)
    assert len(fig.axes) == 2 and "best epoch" in " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_config_and_parameters_are_validated():
    net_p, cfg = split_params({"channels": (8, 8, 8, 8), "epochs": 4, "schedule": "step"})
    assert net_p == {"channels": (8, 8, 8, 8)} and (cfg.epochs, cfg.schedule) == (4, "step")
    for bad, msg in [({"optimizer": "adagrad"}, "optimizer 'adagrad'"), ({"schedule": "warm"}, "schedule 'warm'"),
                     ({"epochs": 0}, "epochs must be a positive integer"), ({"lr": -1}, "lr must be a positive number")]:
        with pytest.raises(MedwbError, match=msg): split_params(bad)
    with pytest.raises(MedwbError, match="unknown imaging network 'vgg'"): make_network("vgg")
    assert set(NETWORKS) == {"small_cnn", "resnet", "densenet121", "unet"}
    assert str(default_device("cpu")) == "cpu"


def test_bad_training_input_is_refused_before_training(data):
    d, _ = data
    x, y, m = d["images"][:8], d["labels"][:8], d["masks"][:8]
    with pytest.raises(MedwbError, match="images must be"): fit(make_network("small_cnn"), x[:, 0], y, x, y)
    with pytest.raises(MedwbError, match="masks must be binary"):
        fit(make_network("unet"), x, m * 3, x, m, task="segmentation")
    with pytest.raises(MedwbError, match="differ"): fit(make_network("small_cnn"), x, y, x[:, :, :32, :32], y)
    with pytest.raises(MedwbError, match="no images"): fit(make_network("small_cnn"), x[:0], y[:0], x, y)


def test_imaging_datasets_load_and_fingerprint(tmp_path):
    a = load_imaging_dataset("lesions")
    assert a.images.shape == (600, 1, 64, 64) and a.masks.shape == a.images.shape and a.spacing == (0.5, 0.5)
    assert a.fingerprint == load_imaging_dataset("lesions").fingerprint
    assert a.fingerprint != load_imaging_dataset("lesions", spec={"generator": "lesions", "n": 600, "seed": 1}).fingerprint
    d = make_lesion_images(30, seed=2)
    save_npz(tmp_path / "x.npz", d)
    z = load_imaging_dataset("x", spec={"path": str(tmp_path / "x.npz")})
    assert sorted(np.concatenate(list(z.split.values()))) == list(range(30)) and z.masks is not None
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(MedwbError, match="bad.npz"): load_imaging_dataset("b", spec={"path": str(tmp_path / "bad.npz")})
    with pytest.raises(MedwbError, match="only 'lesions'"): load_imaging_dataset("g", spec={"generator": "brains"})
    with pytest.raises(MedwbError, match="not a Python literal"): load_imaging_dataset("g", spec={"generator": "lesions", "n": "many"})

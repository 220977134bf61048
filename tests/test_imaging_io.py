"""Image readers (clause 6.2.3): DICOM, PNG/JPEG folders, MedMNIST .npz, NIfTI, masks and MONAI preprocessing.

Every test writes its own files. Good files load with exact values; every bad file is a `MedwbError`
naming it, and in folder readers it is skipped and logged while the rest load (`n_read == n_loaded + dropped`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medwb.core.settings import MedwbError
from medwb.imaging.io import check_mask, preprocess, read_dicom_folder, read_dicom_image, read_dicom_series, read_image_folder, read_labelled_folder, read_medmnist_npz, read_nifti


def make_ct(path: Path, pixels, slope=2, intercept=-1024, instance=1, z=0.0, mono="MONOCHROME2", window=(40, 400)) -> Path:
    "A small uint16 CT-like DICOM with stored values `pixels` ((H, W) or (F, H, W))."
    pixels = np.asarray(pixels, dtype=np.uint16)
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset(); ds.file_meta = fm
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, fm.MediaStorageSOPInstanceUID, "CT"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3: ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, mono
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.WindowCenter, ds.WindowWidth = window
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.8], 2.5
    ds.InstanceNumber, ds.ImagePositionPatient, ds.ImageOrientationPatient = instance, [0, 0, z], [1, 0, 0, 0, 1, 0]
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def err(fn, *args, **kw) -> str:
    "The MedwbError message of fn(*args, **kw)."
    with pytest.raises(MedwbError) as e: fn(*args, **kw)
    return str(e.value)


@pytest.fixture
def px():
    a = np.full((8, 10), 512); a[0, 0] = 0; a[1, 1] = 1024
    return a


# --- DICOM -------------------------------------------------------------------------------------------------

def test_dicom_rescale_to_hu(tmp_path, px):
    img, meta = read_dicom_image(make_ct(tmp_path / "ct.dcm", px))
    assert img.shape == (1, 8, 10) and img.dtype == np.float32
    assert (img[0, 0, 0], img[0, 1, 1], img[0, 5, 5]) == (-1024, 1024, 0)     # 2 * stored - 1024
    assert meta["pixel_spacing"] == (0.7, 0.8) and meta["rescale_intercept"] == -1024 and meta["window"] is None


def test_dicom_windowing(tmp_path, px):
    make_ct(tmp_path / "ct.dcm", px)
    w, m = read_dicom_image(tmp_path / "ct.dcm", window="file")            # 40/400: [-160, 240] HU → [0, 1]
    assert m["window"] == (40.0, 400.0) and w[0, 5, 5] == np.float32(0.4) and w.min() == 0 and w.max() == 1
    w2, _ = read_dicom_image(tmp_path / "ct.dcm", window=(0, 2048))
    assert w2[0, 5, 5] == 0.5 and w2[0, 0, 0] == 0 and w2[0, 1, 1] == 1
    assert "width must be positive" in err(read_dicom_image, tmp_path / "ct.dcm", window=(0, 0))


def test_dicom_monochrome1_inverted(tmp_path, px):
    make_ct(tmp_path / "m1.dcm", px, mono="MONOCHROME1")
    a, _ = read_dicom_image(tmp_path / "m1.dcm")
    assert a[0, 0, 0] == 1024 and a[0, 1, 1] == -1024
    w, _ = read_dicom_image(tmp_path / "m1.dcm", window=(0, 2048))
    assert w[0, 0, 0] == 1 and w[0, 1, 1] == 0


def test_dicom_multiframe_as_channels(tmp_path, px):
    a, m = read_dicom_image(make_ct(tmp_path / "mf.dcm", np.stack([px, px + 5, px + 10])))
    assert a.shape == (3, 8, 10) and m["frames"] == 3 and list(a[:, 5, 5]) == [0, 10, 20]


def test_dicom_bad_files_named(tmp_path, px):
    make_ct(tmp_path / "ct.dcm", px)
    ds = pydicom.dcmread(tmp_path / "ct.dcm"); del ds.PixelData; ds.save_as(tmp_path / "nopix.dcm")
    assert "nopix.dcm has no pixel data" in err(read_dicom_image, tmp_path / "nopix.dcm")
    (tmp_path / "trunc.dcm").write_bytes((tmp_path / "ct.dcm").read_bytes()[:400])
    assert "trunc.dcm" in err(read_dicom_image, tmp_path / "trunc.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 50)
    assert "junk.dcm" in err(read_dicom_image, tmp_path / "junk.dcm")
    assert "absent.dcm does not exist" in err(read_dicom_image, tmp_path / "absent.dcm")


def test_pydicom_ct_small_hu_plausible():
    a, m = read_dicom_image(get_testdata_file("CT_small.dcm"))
    assert a.shape == (1, 128, 128) and m["modality"] == "CT" and m["rescale_intercept"] == -1024
    assert -1100 <= a.min() < -500 and 0 < a.max() <= 3100              # air-ish to soft tissue/bone, in HU
    assert m["pixel_spacing"][0] == pytest.approx(0.661468)


def test_pydicom_mr_small_plain_and_rle_decode_alike_and_rtplan_is_refused():
    "pydicom's shipped MR (explicit VR and RLE Lossless) gives the same pixels; its RT Plan has no image."
    a, m = read_dicom_image(get_testdata_file("MR_small.dcm"))
    b, _ = read_dicom_image(get_testdata_file("MR_small_RLE.dcm"))
    assert a.shape == (1, 64, 64) and m["modality"] == "MR" and np.array_equal(a, b)
    assert "has no pixel data (a non-image DICOM object: RTPLAN)" in err(read_dicom_image, get_testdata_file("rtplan.dcm"))


@pytest.fixture
def series(tmp_path):
    "Three slices written out of order, plus a non-image object and a truncated file."
    d = tmp_path / "series"; d.mkdir()
    for i, z in enumerate([5.0, -5.0, 0.0]):
        make_ct(d / f"s{i}.dcm", np.full((8, 10), 512 + int(z)), instance=3 - i, z=z)
    ds = pydicom.dcmread(d / "s0.dcm"); del ds.PixelData; ds.save_as(d / "nopix.dcm")
    (d / "trunc.dcm").write_bytes((d / "s0.dcm").read_bytes()[:300])
    return d


def test_dicom_series_sorted_and_skips_logged(series):
    vol, meta, log = read_dicom_series(series)
    assert vol.shape == (3, 8, 10) and list(vol[:, 0, 0]) == [-10, 0, 10]
    assert meta["spacing"] == (5.0, 0.7, 0.8) and [Path(f).name for f in meta["files"]] == ["s1.dcm", "s2.dcm", "s0.dcm"]
    assert (log.n_read, log.n_loaded, len(log.dropped)) == (5, 3, 2) and log.accounted
    assert sorted(Path(d["file"]).name for d in log.dropped) == ["nopix.dcm", "trunc.dcm"]
    assert any("no pixel data" in d["reason"] for d in log.dropped)


def test_dicom_series_by_instance_number(tmp_path):
    d = tmp_path / "s"; d.mkdir()
    for i, inst in enumerate([2, 3, 1]):
        make_ct(d / f"x{i}.dcm", np.full((4, 4), 512 + inst), instance=inst)
        ds = pydicom.dcmread(d / f"x{i}.dcm"); del ds.ImagePositionPatient; ds.save_as(d / f"x{i}.dcm")
    vol, meta, _ = read_dicom_series(d)
    assert list(vol[:, 0, 0]) == [2, 4, 6] and meta["spacing"] == (2.5, 0.7, 0.8)   # slice thickness when no positions


def test_dicom_folder_images_and_shape_mismatch(series):
    make_ct(series / "wide.dcm", np.full((8, 12), 512))
    X, meta, log = read_dicom_folder(series)
    assert X.shape == (3, 1, 8, 10) and len(meta) == 3 and set(meta.columns) >= {"file", "pixel_spacing", "modality"}
    assert (log.n_read, log.n_loaded, len(log.dropped)) == (6, 3, 3) and log.accounted
    assert any(Path(d["file"]).name == "wide.dcm" and "shape" in d["reason"] for d in log.dropped)


def test_dicom_folder_empty_or_all_bad(tmp_path):
    (tmp_path / "e").mkdir()
    assert "holds no DICOM" in err(read_dicom_folder, tmp_path / "e")
    (tmp_path / "bad").mkdir(); (tmp_path / "bad" / "a.dcm").write_bytes(b"nope")
    assert "a.dcm" in err(read_dicom_series, tmp_path / "bad")


# --- PNG/JPEG folders -----------------------------------------------------------------------------------------

@pytest.fixture
def pngs(tmp_path):
    d = tmp_path / "png"; d.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2): Image.fromarray(rng.integers(0, 256, (16, 12), dtype=np.uint8)).save(d / f"g{i}.png")
    Image.fromarray(np.full((16, 12, 3), [255, 0, 0], dtype=np.uint8)).save(d / "rgb.png")
    Image.fromarray(np.full((16, 12), 128, dtype=np.uint8)).save(d / "j.jpg", quality=95)
    (d / "labels.csv").write_text("file,label\ng0.png,0\ng1.png,1\nrgb.png,1\nghost.png,0\nj.jpg,0\n")
    return d


def test_image_folder_loads_and_logs_missing(pngs):
    X, meta, log = read_image_folder(pngs, pngs / "labels.csv")
    assert X.shape == (4, 1, 16, 12) and X.dtype == np.float32 and X.min() >= 0 and X.max() <= 1
    assert np.allclose(X[0, 0], np.asarray(Image.open(pngs / "g0.png")) / 255)
    assert (log.n_read, log.n_loaded, len(log.dropped)) == (5, 4, 1) and log.accounted
    assert Path(log.dropped[0]["file"]).name == "ghost.png" and "ghost.png" in log.dropped[0]["reason"]
    assert list(meta.label) == ["0", "1", "1", "0"] and meta.converted_from.tolist()[2] == "RGB"
    assert X[2].mean() == pytest.approx(0.299, abs=0.01) and X[3].mean() == pytest.approx(128 / 255, abs=0.02)


def test_image_folder_channels(pngs):
    X, _, log = read_image_folder(pngs, pngs / "labels.csv", channels=None)   # nothing converts: the odd one is dropped
    assert len(X) == 3 and log.accounted and any("rgb.png has 3 channel(s)" in d["reason"] for d in log.dropped)
    X3, meta, _ = read_image_folder(pngs, pngs / "labels.csv", channels=3)
    assert X3.shape == (4, 3, 16, 12) and np.allclose(X3[2, :, 0, 0], [1, 0, 0])
    assert "channels must be" in err(read_image_folder, pngs, pngs / "labels.csv", channels=2)


def test_image_folder_sizes(pngs):
    Image.fromarray(np.zeros((32, 24), dtype=np.uint8)).save(pngs / "big.png")
    with open(pngs / "labels.csv", "a") as f: f.write("big.png,1\n")
    X, _, log = read_image_folder(pngs, pngs / "labels.csv")                  # no size: the odd one is dropped, named
    [big] = [d for d in log.dropped if Path(d["file"]).name == "big.png"]
    assert len(X) == 4 and "big.png is 32x24 but g0.png is 16x12" in big["reason"] and big["location"] == "labels.csv line 7"
    X, meta, log = read_image_folder(pngs, pngs / "labels.csv", size=20)
    assert X.shape == (5, 1, 20, 20) and meta.orig_height.tolist()[-1] == 32 and log.n_loaded == 5


def test_image_folder_corrupt_file_skipped(pngs):
    (pngs / "broken.png").write_bytes(b"\x89PNG garbage")
    with open(pngs / "labels.csv", "a") as f: f.write("broken.png,1\n")
    X, _, log = read_image_folder(pngs, pngs / "labels.csv")
    assert len(X) == 4 and len(log.dropped) == 2 and log.accounted
    assert any(Path(d["file"]).name == "broken.png" for d in log.dropped)


def test_image_folder_bad_inputs(tmp_path, pngs):
    (tmp_path / "empty").mkdir()
    assert "empty holds no PNG, JPEG or DICOM" in err(read_image_folder, tmp_path / "empty", pngs / "labels.csv")
    (tmp_path / "nolabel.csv").write_text("name,y\ng0.png,0\n")
    assert "nolabel.csv lacks column(s) file, label" in err(read_image_folder, pngs, tmp_path / "nolabel.csv")
    (tmp_path / "ghosts.csv").write_text("file,label\nnone1.png,0\nnone2.png,1\n")
    assert "ghosts.csv" in err(read_image_folder, pngs, tmp_path / "ghosts.csv")


# --- MedMNIST, NIfTI, masks -------------------------------------------------------------------------------------

@pytest.fixture
def mm_arrays():
    rng = np.random.default_rng(2)
    a = {f"{s}_images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s, n in [("train", 6), ("val", 2), ("test", 3)]}
    a |= {f"{s}_labels": rng.integers(0, 9, (len(a[f"{s}_images"]), 1)) for s in ("train", "val", "test")}
    a["train_images"][0, 0, 0], a["train_images"][0, 0, 1] = 255, 0
    return a


def test_medmnist(tmp_path, mm_arrays):
    np.savez(tmp_path / "m.npz", **mm_arrays)
    d = read_medmnist_npz(tmp_path / "m.npz")
    assert set(d) == {"train", "val", "test"}
    imgs, labels, masks = d["train"]
    assert imgs.shape == (6, 1, 28, 28) and imgs.dtype == np.float32 and imgs.min() == 0 and imgs.max() == 1
    assert np.allclose(imgs[:, 0] * 255, mm_arrays["train_images"]) and labels.shape == (6,) and masks is None
    assert np.array_equal(d["test"].labels, mm_arrays["test_labels"][:, 0])


def test_medmnist_rgb_masks_and_missing(tmp_path, mm_arrays):
    rgb = dict(mm_arrays, train_images=np.zeros((6, 28, 28, 3), np.uint8), train_masks=np.ones((6, 28, 28), np.uint8))
    np.savez(tmp_path / "rgb.npz", **rgb)
    d = read_medmnist_npz(tmp_path / "rgb.npz")
    assert d["train"].images.shape == (6, 3, 28, 28) and d["train"].masks.shape == (6, 28, 28) and d["val"].masks is None
    np.savez(tmp_path / "part.npz", **{k: v for k, v in mm_arrays.items() if k not in ("val_labels", "test_images")})
    assert "part.npz lacks MedMNIST key(s): val_labels, test_images" in err(read_medmnist_npz, tmp_path / "part.npz")
    np.savez(tmp_path / "n.npz", **dict(mm_arrays, val_labels=np.zeros(5)))
    assert "n.npz: val_images has 2 images but val_labels 5" in err(read_medmnist_npz, tmp_path / "n.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    assert "junk.npz" in err(read_medmnist_npz, tmp_path / "junk.npz")


def test_nifti(tmp_path):
    nib = pytest.importorskip("nibabel")
    vol = np.random.default_rng(3).random((5, 6, 7)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([0.5, 0.7, 2.0, 1])), tmp_path / "v.nii.gz")
    a, meta = read_nifti(tmp_path / "v.nii.gz")
    assert a.shape == (5, 6, 7) and np.allclose(a, vol) and meta["spacing"] == (0.5, 0.7, 2.0)
    assert np.allclose(np.diag(meta["affine"]), [0.5, 0.7, 2.0, 1])
    (tmp_path / "bad.nii.gz").write_bytes(b"x" * 100)
    assert "bad.nii.gz is not a readable NIfTI" in err(read_nifti, tmp_path / "bad.nii.gz")
    assert "gone.nii does not exist" in err(read_nifti, tmp_path / "gone.nii")


def test_check_mask():
    img = np.zeros((1, 4, 4))
    assert check_mask(img, np.eye(4), "m.png").dtype == np.uint8
    assert "mask m.png: shape (4, 5) does not match image shape (1, 4, 4)" in err(check_mask, img, np.zeros((4, 5)), "m.png")
    assert "mask m.png is not binary: values [0, 255]" in err(check_mask, img, np.eye(4, dtype=np.uint8) * 255, "m.png")


# --- preprocessing ----------------------------------------------------------------------------------------------

def test_preprocess_zscore_and_minmax():
    rng = np.random.default_rng(4)
    X = (rng.random((3, 1, 40, 30)) * np.array([1, 100, 5])[:, None, None, None] + 7).astype(np.float32)
    Z = preprocess(X, size=32)
    assert Z.shape == (3, 1, 32, 32) and Z.dtype == np.float32
    for z in Z: assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
    M = preprocess(X, size=None, normalise="minmax")
    assert M.shape == X.shape and all(m.min() == 0 and m.max() == 1 for m in M)
    rough = lambda a: np.abs(np.diff(a, axis=-1)).mean()
    S = preprocess(X, size=None, normalise="minmax", denoise=True)
    assert rough(S[0]) < 0.5 * rough(M[0])
    assert "normalise must be one of" in err(preprocess, X, normalise="robust")
    assert "(N, C, H, W)" in err(preprocess, X[0])


# --- labelled folders: DICOM and masks ---------------------------------------------------------------------------

@pytest.fixture
def dcm_masks(tmp_path):
    "Three CT slices with PixelSpacing (0.7, 0.8) and masks (0/1, 0/255, empty cell), plus one PNG with its mask."
    d = tmp_path / "dm"; d.mkdir()
    body = np.full((8, 10), 512); body[2:5, 3:7] = 700
    for n, add in (("a", 0), ("b", 30), ("c", 60)): make_ct(d / f"{n}.dcm", body + add)
    lesion = (body == 700).astype(np.uint8)
    Image.fromarray(lesion).save(d / "a_mask.png"); Image.fromarray(lesion * 255).save(d / "b_mask.png")
    Image.fromarray((lesion * 200).astype(np.uint8)).save(d / "p.png"); Image.fromarray(lesion).save(d / "p_mask.png")
    (d / "labels.csv").write_text("file,label,mask\na.dcm,1,a_mask.png\nb.dcm,1,b_mask.png\nc.dcm,0,\np.png,1,p_mask.png\n")
    return d, lesion


def test_labelled_folder_reads_dicom_and_masks(dcm_masks):
    d, lesion = dcm_masks
    r = read_labelled_folder(d, d / "labels.csv")
    assert r.images.shape == (4, 1, 8, 10) and r.masks.shape == (4, 1, 8, 10) and r.log.n_loaded == 4 and not r.log.dropped
    assert (r.masks[0, 0] == lesion).all() and (r.masks[1, 0] == lesion).all() and r.masks[2].sum() == 0   # 0/255 → 0/1; empty cell → zeros
    assert r.images[0].min() == 0 and r.images[0].max() == 1 and (r.images[0, 0][lesion == 1] == 1).all()  # min-max per DICOM image
    assert r.meta.format.tolist() == ["dicom"] * 3 + ["raster"]
    assert r.meta.spacing_row.tolist()[:3] == [0.7] * 3 and np.isnan(r.meta.spacing_row.tolist()[3])
    w = read_labelled_folder(d, d / "labels.csv", window=(0, 2048), size=16)      # HU window; resized: spacing follows
    assert w.images.shape == (4, 1, 16, 16) and w.masks.shape == (4, 1, 16, 16) and set(np.unique(w.masks)) == {0, 1}
    assert w.meta.spacing_row[0] == pytest.approx(0.35) and w.meta.spacing_col[0] == pytest.approx(0.5)
    assert read_labelled_folder(d, d / "labels.csv", channels=3).images.shape == (4, 3, 8, 10)
    X, meta, log = read_image_folder(d, d / "labels.csv")                          # the same reader without masks
    assert X.shape == (4, 1, 8, 10) and log.n_loaded == 4


@pytest.mark.parametrize("row, reason", [
    ("multi.dcm,0,", "multi-frame (2 frames)"),
    ("nopix.dcm,0,", "has no pixel data"),
    ("trunc.dcm,1,", "cannot decode pixel data"),
    ("junk.dcm,1,", "not a readable DICOM file"),
    ("a.dcm,1,lost.png", "mask lost.png listed on labels.csv line 6 does not exist"),
    ("a.dcm,1,wrong_size.png", "mask wrong_size.png: shape (9, 10) does not match image shape (8, 10)"),
    ("a.dcm,1,grey.png", "mask grey.png is not binary: values [0, 7]"),
    ("a.dcm,1,rgb_mask.png", "mask rgb_mask.png has 3 channels"),
    ("a.dcm,1,a.dcm", "not a readable image"),
])
def test_labelled_folder_drops_each_bad_row_and_keeps_the_rest(dcm_masks, row, reason):
    d, lesion = dcm_masks
    make_ct(d / "multi.dcm", np.stack([np.full((8, 10), 512)] * 2))
    ct = pydicom.dcmread(d / "a.dcm"); del ct.PixelData; ct.save_as(d / "nopix.dcm")
    (d / "trunc.dcm").write_bytes((d / "a.dcm").read_bytes()[:-40])
    (d / "junk.dcm").write_bytes(b"not dicom at all")
    Image.fromarray(np.zeros((9, 10), np.uint8)).save(d / "wrong_size.png")
    Image.fromarray((lesion * 7).astype(np.uint8)).save(d / "grey.png")
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(d / "rgb_mask.png")
    with open(d / "labels.csv", "a") as f: f.write(row + "\n")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    r = read_labelled_folder(d, d / "labels.csv")
    assert len(r.images) == len(r.masks) == 4 and r.log.n_read == 5 and r.log.accounted
    [drop] = r.log.dropped
    assert reason in drop["reason"] and drop["location"] == "labels.csv line 6" and Path(drop["file"]).name == row.split(",")[0]
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before                 # reading changes nothing


def test_labelled_folder_with_nothing_usable_names_the_first_reason(tmp_path):
    d = tmp_path / "bad"; d.mkdir()
    (d / "x.dcm").write_bytes(b"not dicom at all")
    (d / "l.csv").write_text("file,label\nx.dcm,1\n")
    assert "no image listed in" in (m := err(read_labelled_folder, d, d / "l.csv")) and "x.dcm is not a readable DICOM" in m

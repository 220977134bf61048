"""The package stands alone: a wheel built from the checkout, installed in a fresh environment outside it, finds its
templates, schemas and standards tables as package data and runs `medwb deid` and `medwb run` on a settings file of
its own. And the code fingerprint covers every subpackage, so a changed module can never give a stale cache hit."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from medwb.core.hashing import code_fingerprint

ROOT = Path(__file__).resolve().parents[1]


def test_code_fingerprint_covers_subpackages(monkeypatch, tmp_path):
    import medwb
    pkg = shutil.copytree(Path(medwb.__file__).parent, tmp_path / "medwb", ignore=shutil.ignore_patterns("__pycache__", "templates"))
    monkeypatch.setattr(medwb, "__file__", str(pkg / "__init__.py"))
    before = code_fingerprint()
    f = pkg / "privacy" / "deid.py"
    f.write_text(f.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    assert code_fingerprint() != before, "a change in a subpackage module must change the code fingerprint"
    (pkg / "resources" / "schemas" / "diabetes.yml").write_text("changed", encoding="utf-8")
    assert code_fingerprint() not in (before,)


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    "A fresh environment holding only the wheel of this checkout (its dependencies are borrowed from this one)."
    tmp = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(ROOT)],
                       capture_output=True, text=True, cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    whl = next((tmp / "dist").glob("medwb-*.whl"))
    env = tmp / "env"
    venv.create(env, with_pip=False)
    site = Path(subprocess.run([str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies of this interpreter, by path: the checkout's editable medwb is not among them (its finder is a .pth there)
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(whl)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return env


def _medwb(env: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from medwb.run.cli import main; sys.exit(main(sys.argv[1:]))"
    # the borrowed dependencies' data files (nbconvert's HTML templates) live under this interpreter's share/jupyter
    jp = os.pathsep.join([str(Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")])
    return subprocess.run([str(env / "bin" / "python"), "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "JUPYTER_PATH": jp})


def test_wheel_is_not_the_checkout(wheel_env, tmp_path):
    r = subprocess.run([str(wheel_env / "bin" / "python"), "-c", "import medwb; print(medwb.__file__)"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and not r.stdout.strip().startswith(str(ROOT)), r.stdout + r.stderr


SETTINGS = ("[medwb]\ndata_dir = data\nreports_dir = reports\ndatasets = breast_cancer\nmodels = dummy\n"
            "seeds = 0\nevaluation = holdout\nn_boot = 100\nimaging = none\njobs = 1\nexecutor = sequential\n")


def test_wheel_runs_deid(wheel_env, tmp_path):
    import pydicom
    from medwb.privacy.pseudonyms import generate_key_file
    src = tmp_path / "dicom"; src.mkdir(); (tmp_path / "data").mkdir()
    shutil.copy(Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm", src / "ct.dcm")
    (tmp_path / "settings.ini").write_text(SETTINGS, encoding="utf-8")
    key = generate_key_file(tmp_path / "keys" / "deid.key")
    r = _medwb(wheel_env, "--settings", str(tmp_path / "settings.ini"), "deid", str(src), str(tmp_path / "out"), "--key-file", str(key), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = list((tmp_path / "out").rglob("*.dcm"))
    assert len(out) == 1 and pydicom.dcmread(out[0]).PatientName != pydicom.dcmread(src / "ct.dcm").PatientName


def test_wheel_runs_the_matrix_on_its_own_settings(wheel_env, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "settings.ini").write_text(SETTINGS, encoding="utf-8")
    r = _medwb(wheel_env, "--settings", str(tmp_path / "settings.ini"), "run", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 executed, 0 cached, 0 failed" in r.stdout, r.stdout
    manifests = list((tmp_path / "reports").glob("breast_cancer/*/*/manifest.json"))
    assert len(manifests) == 2
    assert "declared: schemas/breast_cancer.yml" in (tmp_path / "reports" / "breast_cancer" / "data").glob("*/report.html").__next__().read_text(encoding="utf-8")

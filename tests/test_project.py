"The project's own promises: pinned environment, settings header, README commands, data cards, one module per stage."
from __future__ import annotations

import json
import re
import subprocess

from conftest import ROOT
from medwb.core.hashing import sha256_file
from medwb.data.dataset import dataset_card
from medwb.datasets.builtin import load_dataset


def test_lock_pins_every_package_and_torch():
    lines = [l for l in (ROOT / "requirements.lock").read_text().splitlines() if l and not l.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[^=\s]+", l) for l in lines), [l for l in lines if "==" not in l]
    assert "torch==2.13.0" in lines
    for pkg in ("nbdev", "papermill", "scikit-learn", "monai", "shap", "lime", "captum", "matplotlib", "jupyterlab", "distributed"):
        assert any(l.lower().startswith(pkg + "==") for l in lines), pkg
    assert '"torch==2.13.0"' in (ROOT / "pyproject.toml").read_text()


def test_environment_yml_installs_the_same_pins():
    env = (ROOT / "environment.yml").read_text()
    assert "python=3.11" in env and "-r requirements.lock" in env and "-e ." in env


def test_settings_header_points_to_pyproject():
    head = (ROOT / "settings.ini").read_text().split("[medwb]")[0]
    assert "pyproject.toml" in head and "[tool.nbdev]" in (ROOT / "pyproject.toml").read_text()


def test_readme_opens_with_the_two_commands_ci_runs():
    out = subprocess.run(["bash", "-c", "awk '/^```bash/{f=1;next} /^```/{if(f){exit}} f' README.md | grep -v '^[[:space:]]*$'"],
                         cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    assert len(out) == 2
    assert "python3 -m venv .venv" in out[0] and "requirements.lock" in out[0] and out[0].endswith("medwb run")
    assert out[1] == "bash tests/run.sh"
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_data_card_fingerprints_match_the_loaders():
    card = (ROOT / "data" / "README.md").read_text()
    for name in ("breast_cancer", "diabetes", "clinic"):
        assert dataset_card(load_dataset(name))["fingerprint"] in card, name
    for f in ("clinic_messy.csv", "clinic_truth.csv", "clinic_annotations.csv", "clinic_consent.json"):
        assert f"{sha256_file(ROOT / 'data' / f)}  {f}" in card, f


def test_one_module_per_stage_notebook():
    for nb in sorted((ROOT / "nbs").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        exp = [c for c in cells if "".join(c["source"]).startswith("#| default_exp")]
        assert len(exp) == 1, nb.name
        mod = "".join(exp[0]["source"]).split()[-1]
        assert (ROOT / "medwb" / f"{mod}.py").exists(), mod
        assert cells[0]["cell_type"] == "markdown", f"{nb.name} should open with prose"

"Shared helpers: a scratch copy of settings.ini and the `medwb` command of this interpreter."
from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEDWB = str(Path(sys.executable).parent / "medwb")
ROBUSTNESS_SMALL = {"enabled": "true", "rows": "40", "images": "16", "eps_tabular": "0.1, 0.5", "eps_imaging": "2, 8", "pgd_steps": "3",
                    "square_iterations": "5", "hsj_iterations": "2", "hsj_evaluations": "20", "hsj_rows": "8", "surrogate_epochs": "2",
                    "image_distil_epochs": "3"}


def write_settings(folder: Path, medwb: dict | None = None, sections: dict | None = None) -> Path:
    "A settings.ini in `folder`: the repository's, with [medwb] keys and whole sections replaced."
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    cp.optionxform = str
    cp.read(ROOT / "settings.ini", encoding="utf-8")
    cp["medwb"]["templates_dir"] = str(ROOT / "nbs" / "reports")
    cp["medwb"]["data_dir"] = str(folder)
    cp["medwb"]["imaging"] = "none"   # imaging jobs only where a test asks for them (they train networks)
    cp.remove_section("scenario.triage")   # triage jobs likewise (a test that wants one passes the section)
    cp.remove_section("scenario.records")  # and records jobs
    # the robustness sections only where a test asks for them (ROBUSTNESS_SMALL: they run, on few rows, with small budgets)
    cp["robustness"] = {**ROBUSTNESS_SMALL, "enabled": "false"}
    for k, v in (medwb or {}).items(): cp["medwb"][k] = str(v)
    for name, body in (sections or {}).items():
        if body is None: cp.remove_section(name)
        else: cp[name] = {k: str(v) for k, v in body.items()}
    path = folder / "settings.ini"
    with open(path, "w", encoding="utf-8") as f: cp.write(f)
    return path


def medwb(*args: str, settings: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    "Run the medwb command; return the completed process (stdout and stderr as text)."
    pre = ["--settings", str(settings)] if settings else []
    return subprocess.run([MEDWB, *pre, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path

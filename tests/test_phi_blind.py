"""Free-text de-identification measured on notes nobody generated (issue: hand-written blind set).

The blind set (data/phi_notes/blind) is frozen by SHA256SUMS and never used for tuning; these tests hold the
scrubber to the recall and precision it reached there (regression floors a little below the measured values,
which are in the data report and `benchmarks/deid.py`), check the freeze, and check that each identifier the
issue found surviving is removed from the same kind of text."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medwb.core.settings import MedwbError
from medwb.privacy.notes import NOTE_SETS, deid_scores, note_set
from medwb.privacy.phi import find_phi, scrub

NOTES = Path(__file__).resolve().parents[1] / "data" / "phi_notes"
# measured on the blind set (see the issue note); floors leave room for a bootstrap-sized wobble, not for a regression
FLOORS = {"zh": {"recall": 0.92, "precision": 0.95}, "en": {"recall": 0.91, "precision": 0.95}}   # measured 0.939 and 0.929


@pytest.fixture(scope="module")
def blind() -> dict:
    return {lang: deid_scores(note_set("blind", NOTES, lang=lang), n_boot=200) for lang in ("zh", "en")}


def test_blind_set_is_frozen(tmp_path):
    notes = note_set("blind", NOTES)
    assert len(notes) == 200 and {n.lang for n in notes} == {"zh", "en"}
    assert sum(len(n.entities) for n in notes) > 2000
    copy = tmp_path / "phi_notes"; shutil.copytree(NOTES, copy)
    f = copy / NOTE_SETS["blind"][0]
    f.write_text(f.read_text(encoding="utf-8").replace("### note", "### note", 1) + " ", encoding="utf-8")   # one byte more
    with pytest.raises(MedwbError, match="differs from its frozen hash"):
        note_set("blind", copy)
    assert len(note_set("dev", copy)) >= 80                                       # the dev set is another file set


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_blind_recall_and_precision(blind, lang):
    s = blind[lang]
    table = s["recall"].round(3).to_string()
    assert s["notes"] == 100 and s["recall"].loc["ALL", "n"] > 1000, table
    assert s["recall"].loc["ALL", "recall"] >= FLOORS[lang]["recall"], table
    assert s["precision"]["precision"] >= FLOORS[lang]["precision"], s["precision"]
    assert s["recall"].loc["ALL", "ci_low"] < s["recall"].loc["ALL", "recall"] < s["recall"].loc["ALL", "ci_high"], table


def test_the_floor_can_fail():
    "A scrubber that misses one kind (names) falls below the floor on the blind set."
    notes = note_set("blind", NOTES, lang="en")
    no_names = lambda t: [e for e in find_phi(t) if e.type != "PERSON"]
    assert deid_scores(notes, no_names, n_boot=50)["recall"].loc["ALL", "recall"] < FLOORS["en"]["recall"]


# the identifiers the issue found surviving, in text of the same kind (not copied from the blind set)
MISSES = [
    ("身份证号：430102199003071236，复诊。", "430102199003071236"),          # wrong check digit after a label
    ("身份证 43010219900307123X 已核对", "43010219900307123X"),
    ("术者：赵立新、孙悦，麻醉：刘洋。", "孙悦"),                              # second name of a list
    ("病史由其母陈静代述。", "陈静"),                                          # after a kinship word
    ("患者在湖南省第二建筑公司工作。", "湖南省第二建筑公司"),                  # employer
    ("He works as an engineer at Boeing and lives in Seattle.", "Boeing"),
    ("He works as an engineer at Boeing and lives in Seattle.", "Seattle"),
    ("病理号 P2024-00317，待报告。", "P2024-00317"),                          # record numbers under other labels
    ("医保卡号：H43010088123。", "H43010088123"),
    ("Insurance ID XKJ-4482913, group 7.", "XKJ-4482913"),
    ("家属微信号 zhang_wei88，可联系。", "zhang_wei88"),                       # online identifiers
    ("QQ 283746192 联系患者女儿。", "283746192"),
    ("Portal login from IP 192.168.31.207 noted.", "192.168.31.207"),
    ("车牌湘A·8B2K7停于急诊门口。", "湘A·8B2K7"),                              # vehicle plate
    ("SSN: 219-09-9999 on file.", "219-09-9999"),                               # US SSN
    ("Patient: Lucía Fernández-García, seen today.", "Lucía Fernández-García"),  # accented names, whole
]


@pytest.mark.parametrize("text,secret", MISSES)
def test_each_miss_the_issue_found_is_removed(text, secret):
    out = scrub(text).text
    assert secret not in out, out
    for part in secret.replace("-", " ").split():
        if len(part) >= 3: assert part not in out, out                         # no piece of it left either ("[PERSON]ía")

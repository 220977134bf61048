"""DICOM de-identification (clause 5.4.1.3): PS3.15 Annex E Basic Profile from the shipped Table E.1-1.

Identifiers are planted at the top level, three sequences deep, in a private group and in the file meta
header; after `deidentify` none may remain (`residual_phi` searches every element and the written bytes).
UIDs stay consistent across the files of a series; pydicom's own test files de-identify or are quarantined
with a reason; an ultrasound image is quarantined; a corrupt file is an error naming it.
"""
from __future__ import annotations

import glob
import io
import json
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, UltrasoundImageStorage

from medwb.core.settings import MedwbError
from medwb.core.hashing import sha256_file
from medwb.privacy.deid import CID7050, OPTIONS, TABLE_FILE, TABLE_ROWS, TABLE_SHA256, UIDMap, burned_in_risk, deidentify, deidentify_folder, load_action_table, read_dicom, residual_phi, resolve_action, save_dicom

KEY = b"medwb-test-key-0123456789"
TEST_FILES = sorted(glob.glob(str(Path(pydicom.__file__).parent / "data" / "test_files" / "*.dcm")))
STUDY, SERIES, FOR = "1.2.826.0.1.3680043.9.7777.1", "1.2.826.0.1.3680043.9.7777.1.2", "1.2.826.0.1.3680043.9.7777.1.9"
SOP = ["1.2.826.0.1.3680043.9.7777.1.2.101", "1.2.826.0.1.3680043.9.7777.1.2.102"]

# Every identifier planted; none may survive.
PLANTED = {"name": "ZZPLANTED^ALICE", "family": "ZZPLANTED", "pid": "PID-PLANT-0042", "other_id": "OPID-PLANT-77",
           "institution": "PLANTED GENERAL HOSPITAL", "referrer": "DRPLANTER^BOB", "birth": "19610203",
           "study_date": "20190412", "accession": "ACC-PLANT-555", "aet": "PHI_SRC_AET", "impl": "PHI_IMPL_V1",
           "study_uid": STUDY, "series_uid": SERIES, "for_uid": FOR, "sop0": SOP[0], "sop1": SOP[1],
           "private_text": "PRIVATE-PHI-TEXT", "deep_station": "DEEPSTATION7"}


def code_item(value, scheme, meaning) -> Dataset:
    d = Dataset()
    d.CodeValue, d.CodingSchemeDesignator, d.CodeMeaning = value, scheme, meaning
    return d


def planted(i: int = 0, modality: str = "CT", sop_class=CTImageStorage) -> FileDataset:
    "A small image instance with identifiers at the top level, three sequences deep, in a private group and in file meta."
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, SOP[i]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle, meta.ImplementationVersionName = PLANTED["aet"], PLANTED["impl"]
    ds = FileDataset(f"planted{i}.dcm", {}, file_meta=meta, preamble=b"PHI_SRC_AET".ljust(128, b"\0"))
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, SOP[i]
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = STUDY, SERIES, FOR
    ds.Modality, ds.Manufacturer, ds.InstanceNumber = modality, "ACME", i + 1
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PLANTED["name"], PLANTED["pid"], PLANTED["birth"]
    ds.OtherPatientIDs = PLANTED["other_id"]
    ds.PatientSex, ds.PatientAge = "F", "058Y"
    ds.InstitutionName, ds.ReferringPhysicianName = PLANTED["institution"], PLANTED["referrer"]
    ds.StudyDate, ds.SeriesDate, ds.ContentDate, ds.StudyTime = PLANTED["study_date"], PLANTED["study_date"], PLANTED["study_date"], "093000"
    ds.AccessionNumber = PLANTED["accession"]
    ds.StudyDescription = f"CT chest for {PLANTED['family']} Alice, {PLANTED['pid']}"
    # a private group, with its creator
    block = ds.private_block(0x0011, "PLANTED CREATOR", create=True)
    block.add_new(0x01, "LO", PLANTED["private_text"])
    block.add_new(0x02, "PN", PLANTED["name"])
    # three sequences deep, through sequences the table keeps (not listed) ...
    deep = Dataset()
    deep.PatientName, deep.InstitutionName, deep.StationName = PLANTED["name"], PLANTED["institution"], PLANTED["deep_station"]
    deep.AcquisitionDate, deep.ReferencedSOPInstanceUID = PLANTED["study_date"], SOP[1 - i]
    priv = deep.private_block(0x0019, "DEEP CREATOR", create=True)
    priv.add_new(0x10, "LO", PLANTED["pid"])
    region = code_item("T-D3000", "SRT", "Chest")
    region.AnatomicRegionModifierSequence = [deep]
    inst = Dataset()
    inst.ReferencedSOPClassUID, inst.ReferencedSOPInstanceUID = sop_class, SOP[1 - i]
    inst.AnatomicRegionSequence = [region]
    series = Dataset()
    series.SeriesInstanceUID, series.ReferencedInstanceSequence = SERIES, [inst]
    ds.ReferencedSeriesSequence = [series]
    # ... and through one it removes (Request Attributes, X), which Clean Descriptors keeps and cleans
    req_inner = Dataset()
    req_inner.PatientID, req_inner.ReferringPhysicianName = PLANTED["pid"], PLANTED["referrer"]
    proc = code_item("P1", "99LOCAL", "Chest CT")
    proc.ProcedureCodeSequence = [req_inner]
    req = Dataset()
    req.RequestedProcedureDescription = f"CT for {PLANTED['family']}"
    req.ScheduledProtocolCodeSequence = [proc]
    ds.RequestAttributesSequence = [req]
    ds.OtherPatientIDsSequence = [Dataset()]
    ds.OtherPatientIDsSequence[0].PatientID = PLANTED["other_id"]
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 8, 8, 7, 0, 1
    ds.PhotometricInterpretation, ds.PixelData = "MONOCHROME2", b"\0\1\2\3"
    return ds


def write(ds: FileDataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


# ---------------------------------------------------------------- the table

def test_table_is_the_full_pinned_edition():
    assert sha256_file(TABLE_FILE) == TABLE_SHA256
    t = load_action_table()
    assert len(t) == TABLE_ROWS == 657 and t.edition == "2026d" and len(t.content_items) == 214
    card = (TABLE_FILE.parent / "README.md").read_text()
    assert TABLE_SHA256 in card and "2026d" in card and "657" in card
    # every option column is populated somewhere, and only with K or C
    seen = {o for r in t.rules for o in r.options}
    assert seen == set(OPTIONS)
    assert t.rule(0x60003000).name == "Overlay Data" and t.rule(0x601E4000).name == "Overlay Comments"
    assert t.rule(0x50020010).name == "Curve Data" and t.rule(0x00291234).name == "Private Attributes"


def test_partial_or_edited_table_is_refused(tmp_path):
    doc = json.loads(TABLE_FILE.read_text())
    short = tmp_path / "short.json"
    short.write_text(json.dumps({**doc, "rules": doc["rules"][:300]}))
    with pytest.raises(MedwbError, match="partial list is refused"): load_action_table(short)
    nopid = tmp_path / "nopid.json"
    nopid.write_text(json.dumps({**doc, "rules": [r for r in doc["rules"] if r["tag"] != "00100020"]}))
    with pytest.raises(MedwbError, match="Patient ID"): load_action_table(nopid)
    full = tmp_path / "copy.json"
    full.write_text(json.dumps(doc))
    assert len(load_action_table(full)) == 657          # an unpinned, complete copy is accepted


def test_option_and_compound_resolution():
    t = load_action_table()
    study_date = t.rule(0x00080020)
    assert [resolve_action(study_date, o) for o in ((), {"retain_longitudinal_full_dates"}, {"retain_longitudinal_modified_dates"})] == ["Z", "K", "C"]
    assert resolve_action(t.rule(0x00100020)) == "Z" and resolve_action(t.rule(0x00100020), attr_type="1") == "D"
    assert resolve_action(t.rule(0x00081140)) == "X" and resolve_action(t.rule(0x00081140), attr_type="1") == "U*"


# ---------------------------------------------------------------- one instance

def test_planted_identifiers_are_gone_everywhere(tmp_path):
    m = UIDMap(KEY)
    src = write(planted(0), tmp_path / "in.dcm")
    assert len(residual_phi(src, PLANTED.values())) > 20                          # the check sees what was planted
    out, rep = deidentify(src, uid_map=m)
    assert rep.status == "deidentified" and rep.counts["private"] == 5            # 2 creators + 3 private values
    assert residual_phi(out, PLANTED.values()) == []
    written = tmp_path / "out.dcm"
    out.save_as(written, enforce_file_format=True)
    assert residual_phi(written, PLANTED.values()) == []                          # raw bytes too
    back = pydicom.dcmread(written)
    assert back.PatientIdentityRemoved == "YES" and back.LongitudinalTemporalInformationModified == "REMOVED"
    assert [i.CodeValue for i in back.DeidentificationMethodCodeSequence] == ["113100"]
    assert back.PatientName == "" and back.PatientID == "" and "PatientBirthDate" in back and not back.PatientBirthDate
    assert "OtherPatientIDs" not in back and "InstitutionName" not in back and "RequestAttributesSequence" not in back
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID == m(SOP[0])
    assert "SourceApplicationEntityTitle" not in back.file_meta and back.file_meta.ImplementationVersionName.startswith("MEDWB")
    assert back.preamble == b"\0" * 128
    deep = back.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0]
    assert deep.ReferencedSOPInstanceUID == m(SOP[1]) and deep.PatientName == ""
    assert "InstitutionName" not in deep and "StationName" not in deep and "AcquisitionDate" not in deep
    assert not [e for e in deep if e.tag.is_private]
    assert back.Modality == "CT" and back.Manufacturer == "ACME" and back.PixelData == b"\0\1\2\3"   # not listed: kept


def test_uids_consistent_across_a_series(tmp_path):
    m = UIDMap(KEY)
    a, _ = deidentify(planted(0), uid_map=m)
    b, _ = deidentify(planted(1), uid_map=UIDMap(KEY))          # another run, same key
    assert a.StudyInstanceUID == b.StudyInstanceUID != STUDY and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID and a.SOPInstanceUID != b.SOPInstanceUID
    ref = lambda d: d.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    assert ref(a) == b.SOPInstanceUID and ref(b) == a.SOPInstanceUID           # cross-references still resolve
    assert a.ReferencedSeriesSequence[0].SeriesInstanceUID == a.SeriesInstanceUID
    c, _ = deidentify(planted(0), key=b"a-different-secret-key")
    assert c.StudyInstanceUID != a.StudyInstanceUID


def test_options_dates_descriptors_characteristics_codes():
    m = UIDMap(KEY)
    opts = {"retain_longitudinal_modified_dates", "clean_descriptors", "retain_patient_characteristics",
            "retain_safe_private", "retain_institution_identity"}
    out, rep = deidentify(planted(0), opts, m)
    shift = m.date_offset(PLANTED["pid"])
    from datetime import date, timedelta
    assert out.StudyDate == (date(2019, 4, 12) + timedelta(days=shift)).strftime("%Y%m%d") and out.StudyTime == "093000"
    assert out.PatientBirthDate == "" and out.SeriesDate == out.StudyDate      # birth date: Z under every option
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert out.PatientSex == "F" and out.PatientAge == "058Y" and out.InstitutionName == PLANTED["institution"]
    assert out.StudyDescription == "CT chest for [removed] [removed], [removed]"    # cleaned, not removed
    req = out.RequestAttributesSequence[0]                                       # X, but C under Clean Descriptors
    assert req.RequestedProcedureDescription == "CT for [removed]"
    assert req.ScheduledProtocolCodeSequence[0].ProcedureCodeSequence[0].PatientID == ""
    codes = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113112", "113108", "113107", "113105"]          # 113111 not claimed: nothing safe kept
    assert any("Retain Safe Private" in n for n in rep.notes) and rep.counts["private"] == 5
    left = residual_phi(out, [v for k, v in PLANTED.items() if k not in ("institution", "birth", "study_date")])
    assert left == []
    fixed, _ = deidentify(planted(0), {"retain_longitudinal_modified_dates"}, m, date_shift_days=-1)
    assert fixed.StudyDate == "20190411"
    full, _ = deidentify(planted(0), {"retain_longitudinal_full_dates", "retain_uids"}, m)
    assert full.StudyDate == PLANTED["study_date"] and full.StudyInstanceUID == STUDY
    assert full.file_meta.MediaStorageSOPInstanceUID == SOP[0] and full.LongitudinalTemporalInformationModified == "UNMODIFIED"
    with pytest.raises(MedwbError, match="exclude each other"):
        deidentify(planted(0), {"retain_longitudinal_full_dates", "retain_longitudinal_modified_dates"}, m)
    with pytest.raises(MedwbError, match="retain_everything"): deidentify(planted(0), {"retain_everything"}, m)
    with pytest.raises(MedwbError, match="key"): deidentify(planted(0))


def test_iod_types_resolve_compound_actions():
    ds = planted(0)
    ds.ReferencedImageSequence = [Dataset()]
    ds.ReferencedImageSequence[0].ReferencedSOPClassUID, ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = CTImageStorage, SOP[1]
    ds.OperatorsName = "OPPLANT^EVE"
    m = UIDMap(KEY)
    strict, _ = deidentify(ds, uid_map=m)
    assert "ReferencedImageSequence" not in strict and "OperatorsName" not in strict          # unknown IOD: X
    typed, _ = deidentify(ds, uid_map=m, iod_types={CTImageStorage: {0x00081140: "1", "OperatorsName": "2"}})
    assert typed.ReferencedImageSequence[0].ReferencedSOPInstanceUID == m(SOP[1])             # U*: kept, UIDs replaced
    assert typed.OperatorsName == ""                                                          # Type 2: Z


def test_structured_content_and_graphics():
    ds = planted(0)
    def item(vt, code, scheme, meaning, **values):
        d = Dataset()
        d.RelationshipType, d.ValueType = "CONTAINS", vt
        d.ConceptNameCodeSequence = [code_item(code, scheme, meaning)]
        for k, v in values.items(): setattr(d, k, v)
        return d
    ds.ContentSequence = [item("TEXT", "121022", "DCM", "Accession Number", TextValue=PLANTED["accession"]),   # E.3.4-1: X
                          item("TEXT", "121073", "DCM", "Impression", TextValue=f"Nodule; patient {PLANTED['family']}"),
                          item("PNAME", "121008", "DCM", "Person Observer Name", PersonName=PLANTED["referrer"])]
    ds.add_new(0x60003000, "OW", b"\1\0" * 2)                                  # an overlay bitmap
    text = Dataset()
    text.UnformattedTextValue, text.AnchorPointAnnotationUnits = f"Pt {PLANTED['family']}", "PIXEL"
    layer = Dataset()
    layer.GraphicLayer, layer.TextObjectSequence = f"LAYER {PLANTED['family']}", [text]
    ds.GraphicAnnotationSequence = [layer]
    m = UIDMap(KEY)
    basic, _ = deidentify(ds, uid_map=m)
    assert len(basic.ContentSequence) == 1 and len(basic.ContentSequence[0]) == 0    # D: one dummy item
    assert 0x60003000 not in basic
    clean, rep = deidentify(ds, {"clean_structured_content", "clean_graphics"}, m)
    meanings = [i.ConceptNameCodeSequence[0].CodeMeaning for i in clean.ContentSequence]
    assert meanings == ["Impression", "Person Observer Name"]                      # the accession-number item is dropped
    assert clean.ContentSequence[0].TextValue == "Nodule; patient [removed]"
    assert PLANTED["family"] not in str(clean.ContentSequence[1].PersonName)
    assert 0x60003000 not in clean                                              # a bitmap cannot be cleaned: removed
    layer = clean.GraphicAnnotationSequence[0]                                  # kept under Clean Graphics ...
    assert layer.GraphicLayer == "LAYER [removed]"                              # ... unlisted text in it cleaned
    assert layer.TextObjectSequence[0].UnformattedTextValue == "ANONYMIZED"     # listed: D
    assert basic.GraphicAnnotationSequence[0] == Dataset()                      # without the option: D, a dummy item
    assert {"113104", "113103"} <= {i.CodeValue for i in clean.DeidentificationMethodCodeSequence}
    assert residual_phi(clean, PLANTED.values()) == []


# ---------------------------------------------------------------- burned-in annotation

def test_ultrasound_is_quarantined_unless_pixels_are_cleaned():
    us = planted(0, "US", UltrasoundImageStorage)
    assert burned_in_risk(us).startswith("ultrasound")
    out, rep = deidentify(us, key=KEY)
    assert out is None and rep.status == "quarantined" and "ultrasound" in rep.reason and "clean_pixels" in rep.reason
    def blank(ds):
        ds.PixelData = b"\0" * len(ds.PixelData)
    out, rep = deidentify(us, key=KEY, clean_pixels=blank)
    assert rep.status == "deidentified" and out.BurnedInAnnotation == "NO" and out.PixelData == b"\0" * 4
    assert "113101" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    ct = planted(0)
    ct.BurnedInAnnotation = "YES"
    assert deidentify(ct, key=KEY)[1].reason.startswith("BurnedInAnnotation is YES")


def test_pydicom_test_files_deidentify_or_quarantine():
    m, status, unreadable, table = UIDMap(KEY), {}, [], load_action_table()
    for f in TEST_FILES:
        try: read_dicom(f)
        except MedwbError as e:
            assert f in str(e); unreadable.append(f); continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out, rep = deidentify(f, {"clean_descriptors"}, m)
        status[Path(f).name] = rep.status
        if out is None: assert rep.reason; continue
        assert out.PatientIdentityRemoved == "YES"
        buf = io.BytesIO(); save_dicom(out, buf)                                  # and it can be written and read back
        assert pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True).PatientIdentityRemoved == "YES"
        assert not [e for e in out.iterall() if e.tag.is_private]
        original = pydicom.dcmread(f, force=True)
        names = [str(original.get(k)) for k in ("PatientName", "PatientID", "InstitutionName") if str(original.get(k) or "").strip()]
        hits = residual_phi(out, [n for n in names if len(n) >= 4])
        # a value may also stand in an attribute the profile keeps (MR_small's institution is 'TOSHIBA', its Manufacturer too)
        assert all(table.rule(tag_for_keyword(w.split(".")[-1].split("[")[0]) or 0) is None for w, _ in hits), (f, hits)
        for k in ("PatientName", "PatientID", "InstitutionName"): assert not out.get(k)
    assert len(unreadable) <= 6 and len(status) + len(unreadable) == len(TEST_FILES) and len(TEST_FILES) > 50
    assert {"MR_truncated.dcm", "rtplan_truncated.dcm"} <= {Path(f).name for f in unreadable}   # pydicom's cut files are caught
    assert status["CT_small.dcm"] == "deidentified" and status["examples_ybr_color.dcm"] == "quarantined"
    assert sum(s == "quarantined" for s in status.values()) >= 5


# ---------------------------------------------------------------- a folder

def test_folder_writes_quarantines_reports_and_never_overwrites(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "out"
    (src / "alice").mkdir(parents=True)
    write(planted(0), src / "alice" / "ZZPLANTED_1.dcm")
    write(planted(1), src / "alice" / "ZZPLANTED_2.dcm")
    write(planted(0, "US", UltrasoundImageStorage), src / "alice" / "us.dcm")
    whole = (src / "alice" / "ZZPLANTED_1.dcm").read_bytes()
    (src / "corrupt.dcm").write_bytes(whole[:len(whole) // 2])                 # truncated in the middle
    (src / "notes.txt").write_text("not dicom")
    res = deidentify_folder(src, dst, key=KEY)
    assert res.counts() == {"deidentified": 2, "quarantined": 1, "unparsable": 2}
    assert sorted(res.unparsable.file) == ["corrupt.dcm", "notes.txt"]
    assert all(str(src / f) in e for f, e in zip(res.unparsable.file, res.unparsable.error))   # each error names its file
    outs = sorted(dst.rglob("*.dcm"))
    assert len(outs) == 2 and all("ZZPLANTED" not in str(p) for p in outs)
    for p in outs: assert residual_phi(p, PLANTED.values()) == []
    a, b = (pydicom.dcmread(p) for p in outs)
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert (res.log_dir / "quarantine" / "alice" / "us.dcm").exists() and not list(dst.rglob("us.dcm"))
    assert (res.log_dir / "report.csv").exists() and (res.log_dir / "unparsable.csv").exists()
    before = {p: p.stat().st_mtime_ns for p in outs}
    again = deidentify_folder(src, dst, key=KEY)
    assert again.counts()["exists"] == 2 and {p: p.stat().st_mtime_ns for p in outs} == before
    assert not list(dst.rglob("*.tmp"))
    with pytest.raises(MedwbError, match="overlap"): deidentify_folder(src, src / "x", key=KEY)


def test_single_corrupt_file_names_it(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"this is not a DICOM file at all")
    with pytest.raises(MedwbError, match="broken.dcm"): deidentify(bad, key=KEY)
    assert CID7050["basic_profile"] == ("113100", "Basic Application Confidentiality Profile")

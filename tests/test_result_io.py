"""Results described once by the field table: a K = 2, basis-10 model through every writer
and reader (no K, basis size or joint count hard-coded), reading without torch, one exporter
registry, files from before the field table."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from poseviewer.export import (
    EXPORTERS,
    FORMATS,
    export_result,
    formats_help,
    read_json,
    read_npz,
)
from poseviewer.result import COMPONENT_FIELDS, FIT_FIELDS

ROOT = Path(__file__).resolve().parents[1]


def test_k2_basis10_through_every_writer_and_reader(k2_result, tmp_path) -> None:
    fit = k2_result.persons[0].final.fit
    assert fit.components.score.shape == (1, 2)
    assert fit.components.coeffs.shape == (1, 2, 3 + 10)  # 3 translations + the basis
    written = export_result(k2_result, tmp_path, "r", FORMATS, frame="lifting")
    assert sorted(p.name for p in written) == sorted(
        ["r.json", "r.csv", "r.npz", "r.coco.json", "r_person0.bvh", "r_person1.bvh"])
    for back in (read_json(tmp_path / "r.json"), read_npz(tmp_path / "r.npz")):
        assert back.frame_3d == "lifting" and len(back.persons) == 2
        for pa, pb in zip(k2_result.persons, back.persons, strict=True):
            a, b = pa.final.fit, pb.final.fit
            for spec in FIT_FIELDS:  # every field of the table, exactly
                np.testing.assert_array_equal(getattr(a, spec.name), getattr(b, spec.name))
            for spec in COMPONENT_FIELDS:
                np.testing.assert_array_equal(getattr(a.components, spec.name),
                                              getattr(b.components, spec.name))
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    three = [r for r in rows if r["kind"] == "3d"]
    assert len(three) == 2 * 2 * 17  # persons x components x joints
    got = np.array([[float(r[c]) for c in "xyz"] for r in three if r["person"] == "1"])
    np.testing.assert_array_equal(got.reshape(2, 17, 3),
                                  k2_result.persons[1].final.fit.components.pose_3d[0])


def test_json_shapes_follow_the_data_and_are_checked(k2_result, tmp_path) -> None:
    """The reader binds K and C from the file and refuses components that disagree."""
    path = export_result(k2_result, tmp_path, "r", ["json"])[0]
    doc = json.loads(path.read_text())
    comps = doc["persons"][0]["stages"][0]["fit"]["components"]
    assert len(comps) == 2 and len(comps[0]["coeffs"]) == 13
    for c in doc["persons"][1]["stages"][0]["fit"]["components"]:  # C = 12 for person 1
        c["coeffs"] = c["coeffs"][:12]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"persons\[1\].*coeffs: shape \(2, 12\), expected "
                       r"\(2, 13\)"):
        read_json(path)


def test_reading_results_never_imports_torch(k2_result, tmp_path) -> None:
    export_result(k2_result, tmp_path, "r", ["json", "npz"])
    code = (
        "import sys\n"
        "from poseviewer.export import read_json, read_npz\n"
        f"a = read_json({str(tmp_path / 'r.json')!r})\n"
        f"b = read_npz({str(tmp_path / 'r.npz')!r})\n"
        "assert a.persons[0].final.fit.components.score.shape == (1, 2)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr


def test_one_registry_drives_the_cli_help_and_the_menu() -> None:
    help_text = formats_help()
    for name in EXPORTERS:
        assert f"{name}:" in help_text
    # the menu side is checked on the real window: test_app.test_export_menu_lists_the_registry


def test_field_table_matches_the_documentation() -> None:
    """docs/export-format.md holds the table as generated from poseviewer.result."""
    from poseviewer.result import field_table_markdown

    doc = (ROOT / "docs" / "export-format.md").read_text()
    block = doc.split("<!-- field-table:begin -->\n")[1].split("<!-- field-table:end -->")[0]
    assert block == field_table_markdown(), "regenerate: python -m poseviewer.result"
    for spec in FIT_FIELDS + COMPONENT_FIELDS:
        assert f"`{spec.npz_key}`" in block


def test_json_from_before_the_field_table_still_reads(k2_result, tmp_path) -> None:
    """Version-1 files written before the table (no frame_3d, 'lift_centre': null) read as
    the lifting's frame without a centre."""
    path = export_result(k2_result, tmp_path, "r", ["json"], frame="lifting")[0]
    doc = json.loads(path.read_text())
    del doc["frame_3d"]
    doc["persons"][0]["stages"][0]["fit"]["lift_centre"] = None
    path.write_text(json.dumps(doc))
    back = read_json(path)
    assert back.frame_3d == "lifting"
    assert back.persons[0].final.fit.centre is None
    np.testing.assert_array_equal(back.persons[1].final.fit.centre,
                                  k2_result.persons[1].final.fit.centre)

"""The fitted camera elevation (``Fit.elevation``, ``components.elevation``) through every
format: JSON and NPZ round trips, the CSV's per-component column, the Parquet table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from poseviewer.export.csv_format import write_csv
from poseviewer.export.json_format import read_json, write_json
from poseviewer.export.npz_format import read_npz, write_npz
from poseviewer.export.table import ParquetTable, person_rows, read_table
from poseviewer.result import EstimateResult, PersonResult, StageResult

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def tilted(ref, model) -> EstimateResult:
    """Two people lifted with the elevation grid: fits at non-zero elevations."""
    model.elevation_search = True  # (a module-scoped model of this file's own)
    persons = []
    for case in (0, 16):
        xy = ref["in_pose_2d_yx"][case][:, ::-1].copy()
        vis = ref["in_visibility"][case]
        fit = model.lift(xy[None], vis[None], as_numpy=True)
        maps = np.zeros((14, 2, 2), np.float32)
        st = StageResult(0, maps, None, maps, xy, vis.astype(float), vis.copy(), fit)
        persons.append(PersonResult(np.array([0.0, 0, 10, 10]), np.zeros(2), "user",
                                    np.eye(2, 3), [st]))
    res = EstimateResult((800, 600), persons, {}, {}, "cpu")
    els = [p.final.fit.components.elevation for p in persons]
    assert any((e != 0).any() for e in els) and all(np.isfinite(e).all() for e in els)
    return res


def _elev(result: EstimateResult) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(p.final.fit.elevation), np.asarray(p.final.fit.components.elevation))
            for p in result.persons]


@pytest.mark.parametrize("fmt", ["json", "npz"])
def test_elevation_round_trips(tilted, tmp_path, fmt) -> None:
    if fmt == "json":
        back = read_json(write_json(tilted, tmp_path / "r.json"))
    else:
        back = read_npz(write_npz(tilted, tmp_path / "r.npz"))
    for (a, ac), (b, bc) in zip(_elev(tilted), _elev(back), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ac, bc)


def test_elevation_in_json_keys_csv_and_parquet(tilted, tmp_path) -> None:
    doc = json.loads(write_json(tilted, tmp_path / "r.json").read_text())
    fit0 = doc["persons"][0]["stages"][0]["fit"]
    want = _elev(tilted)[0]
    assert fit0["camera_elevation"] == pytest.approx(float(want[0][0]))
    assert [c["elevation"] for c in fit0["components"]] == pytest.approx(want[1][0].tolist())
    with open(write_csv(tilted, tmp_path / "r.csv"), newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "3d"]
    for p, (_, comp) in enumerate(_elev(tilted)):
        mine = [r for r in rows if int(r["person"]) == p]
        got = {int(r["component"]): float(r["elevation_rad"]) for r in mine}
        assert got == pytest.approx(dict(enumerate(comp[0].tolist())))
    table = ParquetTable(tmp_path / "t.parquet", "pelvis")
    for p in range(len(tilted.persons)):
        table.add([person_rows(tilted, "x.png", "x")[p]])
    col = read_table(table.close()).column("fit_elevation").to_pylist()
    assert col == pytest.approx([float(e[0][0]) for e in _elev(tilted)])


def test_bvh_upright_and_as_the_camera_saw_it(tilted, tmp_path) -> None:
    """The BVH is upright by default; ``camera_view`` tilts it by the fitted elevation, the
    same rotation as ``eval3d.tilt`` (the camera looking down by e)."""
    from test_export_bvh import recovered_pose

    from poseviewer.eval3d import tilt
    from poseviewer.export import write_bvh
    from poseviewer.export.bvh import camera_tilt

    for p, person in enumerate(tilted.persons):
        fit = person.final.fit
        pose = np.asarray(fit.pose_3d)[0]
        pose = pose - pose[0]
        up = recovered_pose(write_bvh(tilted, tmp_path / "u.bvh", person=p).read_text())
        np.testing.assert_allclose(up, pose, atol=1e-3)
        cam = recovered_pose(write_bvh(tilted, tmp_path / "c.bvh", person=p,
                                       camera_view=True).read_text())
        el = float(np.asarray(fit.elevation)[0])
        np.testing.assert_allclose(cam, camera_tilt(pose, el), atol=1e-3)
        np.testing.assert_allclose(camera_tilt(pose, el),
                                   tilt(pose[None], np.degrees(el))[0], atol=1e-9)
    assert any(float(np.asarray(p.final.fit.elevation)[0]) != 0 for p in tilted.persons)

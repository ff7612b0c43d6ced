"""``poseviewer estimate --engine local|ray`` (issue 14): batched estimation gives the
one-by-one results, ``ray`` writes what ``local`` writes, failures are reported, ``--resume``
skips finished inputs, and the Parquet table follows the field table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import require_shared

from poseviewer.cli import main
from poseviewer.export import read_json
from poseviewer.export.table import KEY_COLUMNS, TABLE_FIELDS

ROOT = Path(__file__).resolve().parents[1]
N_LSP = 8
ENGINE_ARGS = ["--no-progress", "--format", "json,csv,bvh,coco"]  # the default batch (8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample photos, the first LSP-extended photos and one corrupt file."""
    lsp = require_shared("data", "lspet", "images")
    d = tmp_path_factory.mktemp("photos")
    for p in sorted((ROOT / "resources").glob("sample*.jpg")):
        shutil.copy(p, d / p.name)
    for p in sorted(lsp.glob("*.jpg"))[:N_LSP]:
        shutil.copy(p, d / p.name)
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return d


@pytest.fixture(scope="module")
def local_out(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    # two torch threads here, one per Ray actor (its default) below: the results must not
    # depend on it (the person detector's sums did, by ~1e-5 px in the boxes and ~0.01 px
    # in the joints)
    assert main(["estimate", str(photos), "--out", str(out), "--engine", "local",
                 "--workers", "1", "--threads", "2", *ENGINE_ARGS]) == 1  # corrupt file
    return out


def _joints(out: Path) -> dict[str, list[np.ndarray]]:
    """stem -> per person the final 2D joints, read back from the JSON files."""
    res = {}
    for p in sorted(out.glob("*.json")):
        if p.name in ("report.json", "keypoints_coco.json"):
            continue
        r = read_json(p)
        res[p.stem] = [np.asarray(q.final.joints_2d) for q in r.persons]
    return res


def test_estimate_many_matches_one_by_one_and_does_not_depend_on_the_batch() -> None:
    from poseviewer.estimator import Estimator

    est = Estimator.default(device="cpu")
    imgs = [str(ROOT / "resources" / "sample.jpg"),
            str(ROOT / "resources" / "sample_fullbody.jpg"),
            str(require_shared("data", "lspet", "images", "im00001.jpg"))]
    single = [est.estimate(p) for p in imgs]
    together = est.estimate_many(imgs, batch_size=4)
    apart = est.estimate_many(imgs[:1], batch_size=4) + est.estimate_many(imgs[1:],
                                                                            batch_size=4)
    for a, b, c in zip(single, together, apart, strict=True):
        assert len(a.persons) == len(b.persons) == len(c.persons) >= 1
        for pa, pb, pc in zip(a.persons, b.persons, c.persons, strict=True):
            for sa, sb, sc in zip(pa.stages, pb.stages, pc.stages, strict=True):
                # same batch size: bit-identical, whichever images share the batch
                np.testing.assert_array_equal(sb.joints_2d, sc.joints_2d)
                # the lifting runs per batch of people in float64: rounding at 1e-13 mm
                np.testing.assert_allclose(sb.fit.pose_3d, sc.fit.pose_3d, rtol=0, atol=1e-9)
                # one-by-one runs other batch sizes: float32 rounding only
                np.testing.assert_allclose(sb.joints_2d, sa.joints_2d, atol=0.05)
                # the joints read before fusion travel through the batch too
                assert sa.cnn_joints_2d is not None and sb.cnn_joints_2d is not None
                np.testing.assert_array_equal(sb.cnn_joints_2d, sc.cnn_joints_2d)
                np.testing.assert_allclose(sb.cnn_joints_2d, sa.cnn_joints_2d, atol=0.05)
            np.testing.assert_array_equal(pb.box, pa.box)
    # a failing image comes back in its place; the others still run
    mixed = est.estimate_many([imgs[0], str(ROOT / "no-such.jpg")], batch_size=4,
                              return_exceptions=True)
    assert isinstance(mixed[1], Exception) and "no-such" in str(mixed[1])
    np.testing.assert_array_equal(mixed[0].persons[0].final.joints_2d,
                                  together[0].persons[0].final.joints_2d)


def test_results_do_not_depend_on_the_torch_thread_count() -> None:
    """The Ray engine runs one torch thread per actor, ``local`` torch's default (the
    cores): on real photos, at the default batch size, the same boxes and joints to the bit
    with 1 and 2 threads (the person detector, one image at a time, used to round
    differently with 2 threads: boxes 1.6e-5 px apart, joints up to 0.009 px, 3D up to
    0.04 mm)."""
    import torch

    from poseviewer.estimator import Estimator

    est = Estimator.default(device="cpu")
    imgs = [str(p) for p in sorted(require_shared("data", "lspet", "images").glob("*.jpg"))[:4]]
    old = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            runs.append(est.estimate_many(imgs, batch_size=8))
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*runs, strict=True):
        assert len(a.persons) == len(b.persons) >= 1
        for pa, pb in zip(a.persons, b.persons, strict=True):
            np.testing.assert_array_equal(pa.box, pb.box)
            for sa, sb in zip(pa.stages, pb.stages, strict=True):
                np.testing.assert_array_equal(sa.joints_2d, sb.joints_2d)
            np.testing.assert_allclose(pa.pose_3d, pb.pose_3d, rtol=0, atol=1e-9)


def test_local_engine_writes_files_report_and_table(photos: Path, local_out: Path) -> None:
    import pyarrow.parquet as pq

    report = json.loads((local_out / "report.json").read_text())
    n_photos = 2 + N_LSP
    assert report["inputs"] == n_photos + 1 and report["succeeded"] == n_photos
    assert [f["input"] for f in report["failures"]] == [str(photos / "corrupt.jpg")]
    assert "ImageError" in report["failures"][0]["error"]
    assert (local_out / "poses.parquet").is_file() and (local_out / "keypoints_coco.json").is_file()
    joints = _joints(local_out)
    assert len(joints) == n_photos
    for stem in joints:
        assert (local_out / f"{stem}.csv").is_file()
    # the table: the field table's columns, one row per person, the JSON's numbers
    table = pq.read_table(local_out / "poses.parquet")
    assert table.column_names == [k for k, _, _ in KEY_COLUMNS] + [f.npz_key for _, f in
                                                                  TABLE_FIELDS]
    assert table.schema.field("pose_3d").metadata[b"unit"] == b"size-normalised mm"
    rows = table.to_pylist()
    assert len(rows) == sum(len(v) for v in joints.values())
    for row in rows:
        np.testing.assert_array_equal(np.array(row["joints_2d"]),
                                      joints[row["stem"]][row["person"]])
        r = read_json(local_out / f"{row['stem']}.json")
        pose = np.array(r.persons[row["person"]].final.fit.pose_3d[0], dtype=float)
        np.testing.assert_array_equal(np.array(row["pose_3d"], dtype=float), pose)
        if row["lifted"]:
            np.testing.assert_allclose(np.array(row["pose_3d"])[0], 0.0, atol=1e-9)  # pelvis


def test_resume_skips_inputs_whose_files_exist(photos: Path, local_out: Path,
                                               tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(local_out, out)
    redo = "im00002"
    (out / f"{redo}.json").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.csv")}
    assert main(["estimate", str(photos), "--out", str(out), "--resume", *ENGINE_ARGS]) == 1
    report = json.loads((out / "report.json").read_text())
    skipped = [r for r in report["results"] if any("skipped" in m for m in r["messages"])]
    assert len(skipped) == N_LSP + 1  # every photo but the one without its JSON
    assert redo not in {Path(r["input"]).stem for r in skipped}
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.csv")}
    changed = sorted(k for k in before if after[k] != before[k])
    assert changed == [f"{redo}.csv"]
    # the corrupt file has no outputs, so it is tried (and reported) again
    assert [f["input"] for f in report["failures"]] == [str(photos / "corrupt.jpg")]
    assert _joints(out).keys() == _joints(local_out).keys()
    import pyarrow.parquet as pq

    assert pq.read_table(out / "poses.parquet").num_rows == \
        pq.read_table(local_out / "poses.parquet").num_rows


@pytest.mark.ray
@pytest.mark.slow
def test_ray_engine_gives_the_local_files_and_joints(photos: Path, local_out: Path,
                                                     tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="needs the [cluster] extra")
    import pyarrow.parquet as pq

    out = tmp_path / "ray"
    code = main(["estimate", str(photos), "--out", str(out), "--engine", "ray",
                 "--actors", "1", *ENGINE_ARGS])  # one thread per actor (local: two)
    assert code == 1  # the corrupt image is reported; the job finished
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in local_out.iterdir())
    report = json.loads((out / "report.json").read_text())
    assert report["succeeded"] == 2 + N_LSP
    assert [f["input"] for f in report["failures"]] == [str(photos / "corrupt.jpg")]
    a, b = _joints(local_out), _joints(out)
    assert a.keys() == b.keys()
    for stem in a:
        assert len(a[stem]) == len(b[stem])
        for ja, jb in zip(a[stem], b[stem], strict=True):
            np.testing.assert_allclose(jb, ja, rtol=0, atol=1e-5)
    ta = pq.read_table(local_out / "poses.parquet").to_pylist()
    tb = pq.read_table(out / "poses.parquet").to_pylist()
    assert [(r["stem"], r["person"]) for r in ta] == [(r["stem"], r["person"]) for r in tb]
    for ra, rb in zip(ta, tb, strict=True):
        np.testing.assert_allclose(np.array(rb["pose_3d"], float),
                                   np.array(ra["pose_3d"], float), rtol=0, atol=1e-5)

"""The shape of the code (issue 10): the layering contract, results described once by the
field table (no K, basis size or joint count hard-coded), reading results without torch,
one exporter registry, the selection model without Qt."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from poseviewer.export import (
    EXPORTERS,
    FORMATS,
    Imported2D,
    export_result,
    formats_help,
    lift_imported,
    read_json,
    read_npz,
)
from poseviewer.result import COMPONENT_FIELDS, FIT_FIELDS, EstimateResult, Fit

ROOT = Path(__file__).resolve().parents[1]


def test_import_layering_contract() -> None:
    """import-linter (pyproject.toml): only app imports Qt/pyqtgraph/vispy (the whole package
    forbidden, app exempt); only the batch engine imports ray; app, video, selection and the
    Estimator import no torch directly; lifting imports no cnn/tfjs/detect/checkpoint and
    no torch; cnn, tfjs and lifting are independent;
    export, result and the selection model import neither torch nor the models; lower layers
    never import higher ones."""
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True,
                        no_logo=True) == 0


def test_documented_layer_table_is_the_layers_contract() -> None:
    """docs/architecture.md's table of packages, top to bottom, equals the import-linter
    layers contract (same packages, same order), so neither can drift from the other."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (layers,) = [c["layers"] for c in config["tool"]["importlinter"]["contracts"]
                 if c["type"] == "layers"]
    contract = [sorted(m.strip().removeprefix("poseviewer.") for m in row.split(":"))
                for row in layers]
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc.split("| layer | packages |\n| --- | --- |\n")[1].split("\n\n")[0]
    documented = [sorted(re.findall(r"`(\w+)`", row.split("|")[2]))
                  for row in table.splitlines()]
    assert documented == contract
    packages = {p.name.removesuffix(".py") for p in (ROOT / "poseviewer").iterdir()
                if (p.suffix == ".py" or (p / "__init__.py").is_file())
                and p.name != "__init__.py"}
    assert packages == {m for row in contract for m in row}, "a package outside the layers"


# ---- a K = 2, basis-10 model through every writer and reader -------------------------------
def _model_k2_b10():
    from poseviewer.lifting import PoseModel3D

    rng = np.random.default_rng(0)
    k, b = 2, 10
    e = np.linalg.qr(rng.normal(size=(k, 51, b)))[0].transpose(0, 2, 1).reshape(k, b, 3, 17)
    return PoseModel3D(rng.normal(size=(k, 3, 17)) * 100, e, np.ones((k, b + 1)))


@pytest.fixture(scope="module")
def k2_result() -> EstimateResult:
    rng = np.random.default_rng(1)
    joints = rng.uniform(50, 400, size=(2, 14, 2))
    vis = np.ones((2, 14), bool)
    vis[1, :3] = False
    item = Imported2D(joints_2d=joints, visible=vis, confidence=vis.astype(float),
                      boxes=np.array([[40.0, 40, 410, 410]] * 2), image=None,
                      image_size=(480, 480), source="test")
    return lift_imported(item, _model_k2_b10())


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


# ---- the selection model without Qt ---------------------------------------------------------
def test_selection_model_emits_one_event_per_field_without_qt(k2_result) -> None:
    code = (
        "import sys\n"
        "from poseviewer.selection import Selection\n"
        "assert 'PySide6' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    from poseviewer.result import ResultSequence
    from poseviewer.selection import Selection

    sel = Selection()
    seen: list[tuple[str, object]] = []
    for name in sel.events:  # one signal per field, each with the field's new value
        sel.events[name].connect(lambda value, name=name: seen.append((name, value)))
    with pytest.raises(AttributeError):
        sel.events.stagee  # noqa: B018 - a misspelt event fails at once
    sel.set_result(k2_result, None)
    assert seen == [("result", k2_result)] and sel.num_components == 2
    sel.set_person(1)  # both persons have their stages: the stage stays, no stage event
    assert seen[-1] == ("person", 1) and len(seen) == 2 and sel.person == 1
    assert sel.num_stages == 1
    sel.set_stage(5)  # clamped to the one stage it has: no change, no event
    assert len(seen) == 2
    sel.set_component(5)  # clamped to the last component
    assert sel.component == 1 and seen[-1] == ("component", 1)
    n = len(seen)
    sel.set_component(1)  # no change, no event
    sel.set_stage(0)
    assert len(seen) == n
    sel.set_joint(3)
    sel.set_map_kind("cnn")
    sel.set_overlay(True)
    assert seen[-3:] == [("joint", 3), ("map_kind", "cnn"), ("overlay", True)]
    # a frame axis: a sequence of per-frame results
    sel.set_sequence(ResultSequence.of([k2_result, k2_result]))
    assert sel.num_frames == 2 and sel.frame == 0
    del seen[:]
    sel.set_frame(1)
    assert sel.frame == 1 and seen == [("frame", 1), ("result", k2_result)]
    sel.set_frame(9)  # clamped, already there: nothing
    assert sel.frame == 1 and len(seen) == 2


# ---- errors by class, the cancel token an Event ---------------------------------------------
def test_worker_classifies_errors_by_class_not_by_name() -> None:
    from poseviewer.app.worker import ErrorKind, _message
    from poseviewer.cnn.weights import WeightsError
    from poseviewer.errors import ImageError, ImportFormatError
    from poseviewer.lifting import PoseModelError

    class NotTheImageError(ImageError):  # another name, the same class family
        pass

    ImposterError = type("ImageError", (RuntimeError,), {})  # the name only
    from poseviewer.video.source import VideoError

    assert ErrorKind.of(NotTheImageError("x")) is ErrorKind.IMAGE
    assert ErrorKind.of(ImposterError("x")) is ErrorKind.ERROR
    assert ErrorKind.of(WeightsError("w")) is ErrorKind.MODEL
    assert ErrorKind.of(PoseModelError("m")) is ErrorKind.MODEL
    assert ErrorKind.of(ImportFormatError("i")) is ErrorKind.IMPORT
    assert ErrorKind.of(VideoError("v")) is ErrorKind.VIDEO
    assert ErrorKind("image") is ErrorKind.IMAGE and f"{ErrorKind.NO_PERSON}" == "no person"
    with pytest.raises(ValueError):
        ErrorKind("imgae")  # a misspelt kind fails loudly
    assert _message(NotTheImageError("unreadable")) == "unreadable"
    assert _message(ImposterError("boom")).startswith("ImageError: boom")


def test_cancel_token_is_a_threading_event() -> None:
    import threading

    from poseviewer.errors import Cancelled, CancelToken, check_cancel

    token = CancelToken()
    assert isinstance(token, threading.Event) and not token.cancelled
    check_cancel(token)
    token.cancel()
    assert token.is_set() and token.cancelled
    with pytest.raises(Cancelled):
        check_cancel(token)
    plain = threading.Event()
    plain.set()
    with pytest.raises(Cancelled):
        check_cancel(plain)


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


# ---- a backend that is not a LiftingCPM ------------------------------------------------------
class _GridBackend:
    """A PoseBackend in plain numpy: every joint j peaks at map pixel (j % 8, j // 8 + 1)."""

    def __init__(self) -> None:
        from poseviewer.cnn.backend import CropSpec
        from poseviewer.skeleton import CPM14

        self.skeleton = CPM14
        self.input_size = 32
        self.num_stages = 2
        self.joint_reading = "grid"
        self.map_to_crop = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
        self.input_spec = CropSpec(input_size=32, box_fill=1.0)
        self.lifts = False
        self.seen: list[tuple] = []

    def forward(self, crops, on_stage=None, cancel=None):
        from poseviewer.cnn.backend import StageMaps

        n = len(crops)
        self.seen.append(crops.shape)
        xy = np.array([[j % 8, j // 8 + 1] for j in range(14)], dtype=np.float64)
        maps = np.zeros((n, 14, 8, 8), np.float32)
        maps[:, np.arange(14), xy[:, 1].astype(int), xy[:, 0].astype(int)] = 1.0
        out = []
        for t in range(self.num_stages):
            out.append(StageMaps(cnn=maps, fused=maps, projected=None,
                                 joints=np.broadcast_to(xy, (n, 14, 2)).copy(),
                                 confidence=np.ones((n, 14)), visible=np.ones((n, 14), bool)))
            if on_stage is not None:
                on_stage(t, self.num_stages)
        return out

    def info(self):
        return {"name": "grid"}


def test_any_pose_backend_drives_the_estimator() -> None:
    from poseviewer.cnn.backend import PoseBackend
    from poseviewer.estimator import Estimator

    backend = _GridBackend()
    assert isinstance(backend, PoseBackend)
    est = Estimator(backend, _model_k2_b10(), device="cpu", detector=None)
    stages: list[tuple] = []
    img = np.zeros((100, 80, 3), np.uint8)
    r = est.estimate(img, boxes=[[8, 10, 72, 74], [0, 0, 32, 32]],
                     on_stage=lambda t, n: stages.append((t, n)))
    assert backend.seen == [(2, 32, 32, 3)] and stages == [(0, 2), (1, 2)]
    assert r.model["name"] == "grid" and r.num_stages == 2
    # box 64 px -> crop 32 px (box_fill 1): the crop covers the box, 2 image px per crop
    # px, 4 crop px per map px: map (0, 0) is the box's top-left corner (8, 10)
    m = r.persons[0].map_to_image
    np.testing.assert_allclose(m, [[8.0, 0.0, 8.0], [0.0, 8.0, 10.0]], atol=1e-9)
    xy = np.array([[j % 8, j // 8 + 1] for j in range(14)], dtype=np.float64)
    np.testing.assert_allclose(r.persons[0].final.joints_2d, xy @ m[:, :2].T + m[:, 2])
    # the post-hoc lifting of every stage and person: the 3D model's own answer (along the
    # person's camera ray, the estimator's fov)
    from poseviewer.camera import lift_along_rays

    fit = r.persons[1].stages[0].fit
    want = lift_along_rays(_model_k2_b10(), r.persons[1].stages[0].joints_2d[None],
                           np.ones((1, 14), bool), r.image_size, est.fov)
    assert est.fov > 0
    np.testing.assert_allclose(fit.pose_3d, want.pose_3d, atol=1e-9)


def test_fits_move_to_the_image_one_affine_per_person_at_once(k2_result) -> None:
    """Fit.to_image with (N, 2, 3) affines equals moving each person through its own."""
    fit = Fit.concat([p.final.fit for p in k2_result.persons])
    m = np.array([[[2.0, 0, 10], [0, 2.0, -5]], [[0.5, 0, 100], [0, 0.5, 7]]])
    together = fit.to_image(m)
    for i in range(2):
        alone = fit.select([i]).to_image(m[i])
        for spec in FIT_FIELDS:
            a = getattr(together, spec.name)
            if a is not None or not spec.optional:
                np.testing.assert_allclose(a[i : i + 1], getattr(alone, spec.name),
                                           rtol=0, atol=1e-9)
        for spec in COMPONENT_FIELDS:
            a = getattr(together.components, spec.name)
            if a is not None:
                np.testing.assert_allclose(a[i : i + 1], getattr(alone.components, spec.name),
                                           rtol=0, atol=1e-9)
    # a hand-checked point: person 1's first 2D joint through x' = 0.5 x + 100
    x0 = fit.joints_2d[1, 0]
    np.testing.assert_allclose(together.joints_2d[1, 0], [0.5 * x0[0] + 100, 0.5 * x0[1] + 7])

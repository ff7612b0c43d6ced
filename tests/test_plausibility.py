"""Is a pose believable (issue 22): the limits are derived, a hand-broken pose is flagged,
the flag travels through every exporter and the CLI summary counts it."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import require_shared

from poseviewer.export import csv_text, read_json, read_npz, write_json, write_npz
from poseviewer.export.coco import coco_dict
from poseviewer.lifting import load_pose_model
from poseviewer.lifting.plausibility import (
    PLAUSIBILITY_FILE,
    PlausibilityLimits,
    bone_excess,
    bone_ratios,
)
from poseviewer.paths import DEFAULT_POSE_MODEL
from poseviewer.result import Fit
from poseviewer.skeleton import CPM14, H36M17

ROOT = Path(__file__).resolve().parents[1]


def _standing_2d() -> np.ndarray:
    rel = {"head_top": (10, 0), "neck": (10, 10), "right_shoulder": (4, 12),
           "right_elbow": (2, 22), "right_wrist": (1, 32), "left_shoulder": (16, 12),
           "left_elbow": (18, 22), "left_wrist": (19, 32), "right_hip": (6, 32),
           "right_knee": (5, 46), "right_ankle": (5, 60), "left_hip": (14, 32),
           "left_knee": (15, 46), "left_ankle": (15, 60)}
    return np.array([rel[n] for n in CPM14.joints], float) * 5 + 100


def _fit() -> Fit:
    model = load_pose_model(DEFAULT_POSE_MODEL)
    return Fit.from_lift(model.lift(_standing_2d()[None], np.ones((1, 14), bool),
                                    as_numpy=True))


def _best_residual(fit: Fit) -> np.ndarray:
    return fit.components.residual[np.arange(len(fit)), fit.component]


def test_stored_limits_are_the_derived_ones() -> None:
    require_shared("data", "h36m", "h36m_3d_17j_10hz.npz")
    require_shared("data", "lspet", "annotations.npz")
    spec = importlib.util.spec_from_file_location(
        "derive_plausibility", ROOT / "scripts" / "derive_plausibility.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    derived = mod.derive()
    stored = PlausibilityLimits.load()
    np.testing.assert_allclose(stored.ratio_lo, derived.ratio_lo, rtol=1e-9)
    np.testing.assert_allclose(stored.ratio_hi, derived.ratio_hi, rtol=1e-9)
    np.testing.assert_allclose(stored.typical, derived.typical, rtol=1e-9)
    assert stored.long_limit == pytest.approx(derived.long_limit, rel=1e-9)
    assert stored.short_limit == pytest.approx(derived.short_limit, rel=1e-9)
    assert stored.residual_limit == pytest.approx(derived.residual_limit, rel=1e-9)
    # Human3.6M bones are symmetric: left and right ranges agree
    for a, b in H36M17.flip_pairs:
        ia = [k for k, (_, c) in enumerate(H36M17.bones) if c == a][0]
        ib = [k for k, (_, c) in enumerate(H36M17.bones) if c == b][0]
        assert stored.ratio_lo[ia] == pytest.approx(stored.ratio_lo[ib], rel=1e-4)


def test_bone_ratios_by_hand() -> None:
    # typical lengths 1, 2, 3, ... mm; a pose with every bone twice its typical length but
    # the right shin (bone 2) ten times: the size is the median of the ratios (2)
    typical = np.arange(1.0, 17.0)
    pose = np.zeros((17, 3))
    for k, (parent, child) in enumerate(H36M17.bones):
        pose[child] = pose[parent] + [(10.0 if k == 2 else 2.0) * typical[k], 0, 0]
    r = bone_ratios(pose, typical)
    assert r[2] == pytest.approx(10 * 3 / 2) and r[5] == pytest.approx(6.0)
    lo, hi = typical * 0.9, typical * 1.1
    long, short = bone_excess(r, lo, hi)
    assert long == pytest.approx(15 / 3.3) and short == 1.0


def test_a_hand_broken_pose_is_flagged() -> None:
    lim = PlausibilityLimits.load()
    fit = _fit()
    ok, ex, res = lim.judge(fit.pose_3d, _best_residual(fit), fit.lifted)
    assert ok.all() and ex[0] <= 1.0 and res[0] <= 1.0
    # break it: the right shin (knee -> ankle) made 2.5 x longer (a 450 mm shin -> 1125
    # mm, as when the ankle is read on a neighbour), the rest kept
    pose = fit.pose_3d.copy()
    knee, ankle = H36M17.index("right_knee"), H36M17.index("right_ankle")
    pose[0, ankle] = pose[0, knee] + 2.5 * (pose[0, ankle] - pose[0, knee])
    ok2, ex2, _ = lim.judge(pose, _best_residual(fit), fit.lifted)
    shin = [k for k, (_, c) in enumerate(H36M17.bones) if c == ankle][0]
    r = bone_ratios(pose, np.asarray(lim.typical))[0, shin]
    assert not ok2[0] and ex2[0] == pytest.approx(r / lim.ratio_hi[shin] / lim.long_limit)
    # a residual far above the limit alone flags it; not lifted: not plausible, NaN
    ok3, _, res3 = lim.judge(fit.pose_3d, [3.0 * lim.residual_limit], fit.lifted)
    assert not ok3[0] and res3[0] == pytest.approx(3.0)
    ok4, ex4, _ = lim.judge(fit.pose_3d, _best_residual(fit), [False])
    assert not ok4[0] and np.isnan(ex4[0])


def _result_with_broken_person():
    from poseviewer.estimator import Estimator

    est = Estimator.default(device="cpu")
    img = np.full((240, 200, 3), 90, np.uint8)
    res = est.estimate(img, boxes=[[10, 10, 100, 230], [100, 10, 190, 230]])
    # person 1: its fit judged with a residual limit it cannot meet (a hand-broken fit)
    broken = dataclasses.replace(est.plausibility, residual_limit=1e-12)
    est.plausibility = broken
    for st in res.persons[1].stages:
        if st.fit is not None:
            st.fit.lifted = np.array([True])
            est.judge(st.fit)
    return res


def test_the_flag_travels_through_every_exporter(tmp_path) -> None:
    res = _result_with_broken_person()
    flags = [bool(p.final.fit.plausible[0]) for p in res.persons]
    assert flags[1] is False
    for read, write, name in ((read_json, write_json, "r.json"),
                              (read_npz, write_npz, "r.npz")):
        back = read(write(res, tmp_path / name))
        for pa, pb in zip(res.persons, back.persons, strict=True):
            for sa, sb in zip(pa.stages, pb.stages, strict=True):
                for f in ("plausible", "bone_excess", "residual_excess"):
                    np.testing.assert_array_equal(getattr(sa.fit, f), getattr(sb.fit, f))
    rows = list(csv_text(res).splitlines())
    head = rows[0].split(",")
    col = head.index("plausible")
    last = len(res.persons[1].stages) - 1
    cells = {r.split(",")[col] for r in rows[1:]
             if r.split(",")[1] == "1" and r.split(",")[2] == str(last)}
    assert cells == {"0"}
    doc = coco_dict(res)
    assert [a["poseviewer"]["plausible"] for a in doc["annotations"]] == flags


def test_cli_summary_counts_implausible_people(tmp_path, capsys) -> None:
    from poseviewer.commands._batch import Report, implausible_count

    res = _result_with_broken_person()
    assert implausible_count(res) == 1
    rep = Report("estimate", tmp_path)
    rep.success("a.jpg", [], len(res.persons), [], implausible_count(res))
    rep.success("b.jpg", [], 3, [], 0)
    rep.finish()
    out = capsys.readouterr().out
    assert "5 people, 1 of them with an implausible 3D pose" in out
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["people"] == 5 and doc["implausible"] == 1


def test_limits_file_is_checked() -> None:
    assert PLAUSIBILITY_FILE.is_file()
    with pytest.raises(ValueError, match="plausibility limits"):
        PlausibilityLimits.load(ROOT / "pyproject.toml")

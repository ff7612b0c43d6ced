"""The shipped default 2D network: file, config, accuracy on LSP-extended validation photos
(read from ../shared) and a plausible pose on the bundled sample photo through the
Estimator (with our 3D model)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_shared

from poseviewer.cnn import load_cpm, read_cpm_metadata
from poseviewer.paths import MODELS_DIR, RESOURCES
from poseviewer.skeleton import CPM14, H36M17

WEIGHTS = MODELS_DIR / "cpm_default.safetensors"
POSE3D = MODELS_DIR / "pose3d_default.safetensors"
J = CPM14.index


def test_weights_file_is_small_and_self_describing() -> None:
    assert WEIGHTS.is_file(), f"the default model {WEIGHTS} is missing"
    assert WEIGHTS.stat().st_size <= 25 * 2**20
    meta = read_cpm_metadata(WEIGHTS)
    cfg = meta["config"]
    assert cfg.name == "cpm-default" and cfg.num_joints == 14 and cfg.fusion.enabled
    assert cfg.input_size == 128 and cfg.num_stages == 4
    assert "val_pck" in meta and len(meta["val_pck"]) == cfg.num_stages
    model = load_cpm(WEIGHTS)
    w = model.fusion_weights()
    assert w is not None and bool(((w > 0) & (w < 1)).all())


def test_accuracy_on_validation_photos() -> None:
    """PCK@0.2 on the first 150 validation images, cut straight from the photos."""
    import torch

    from poseviewer.train2d.data import load_annotations, split_indices
    from poseviewer.train2d.evaluate import eval_crops_from_photos, pck, predict_stages

    root = require_shared("data", "lspet")
    torch.set_num_threads(1)
    n = len(load_annotations(root).names)
    _, val = split_indices(n, 1000, 2017)
    model = load_cpm(WEIGHTS)
    crops, gt, vis = eval_crops_from_photos(str(root), val[:150], model.config.input_size)
    pred = predict_stages(model, crops)
    correct, evaluated = pck(pred, gt, vis)
    per_stage = correct.sum((1, 2)) / evaluated.sum((1, 2))
    # measured: 0.261 / 0.312 / 0.324 / 0.333 (stages 1-4) on these 150 photos; the card
    # reports 0.324 on the full split. The bound leaves room for numeric noise only.
    assert per_stage[-1] >= 0.3, per_stage
    assert per_stage[-1] > per_stage[0], per_stage  # the stages refine


@pytest.fixture(scope="module")
def sample_result():
    if not POSE3D.is_file():
        pytest.skip(f"our 3D model {POSE3D} is not there yet")
    from poseviewer.estimator import Estimator

    return Estimator.default().estimate(str(RESOURCES / "sample.jpg"))


def test_plausible_2d_pose_on_the_sample_photo(sample_result) -> None:
    """The sample is an upper-body portrait (512 x 512): the face is around x 180-280,
    y 40-200; the shoulders at y 220-330, the person's right on the image's left."""
    res = sample_result
    assert len(res.persons) == 1
    final = res.persons[0].final
    xy, vis = final.joints_2d, final.visible
    for name in ("head_top", "neck", "right_shoulder", "left_shoulder"):
        assert vis[J(name)], f"{name} not visible"
    assert np.all((xy[vis] >= -5) & (xy[vis] <= 517)), "visible joints must lie in the image"
    head, neck = xy[J("head_top")], xy[J("neck")]
    rsho, lsho = xy[J("right_shoulder")], xy[J("left_shoulder")]
    assert 130 <= head[0] <= 330 and head[1] <= 200, head
    assert head[1] < neck[1] < max(rsho[1], lsho[1]) + 40
    assert head[1] < min(rsho[1], lsho[1])
    assert rsho[0] < neck[0] < lsho[0], (rsho, neck, lsho)
    assert 80 <= np.linalg.norm(lsho - rsho) <= 400


@pytest.mark.xfail(strict=True, reason="the weak default 2D network (val PCK@0.2 0.32, see "
                   "cpm_default.md) gives arm joints that lift to a right upper arm less than "
                   "half the left one (ratio 0.47); remove this mark when a better model passes")
def test_plausible_3d_pose_on_the_sample_photo(sample_result) -> None:
    pose = sample_result.persons[0].pose_3d
    assert np.isfinite(pose).all()
    i = H36M17.index

    def bone(a: str, b: str) -> float:
        return float(np.linalg.norm(pose[i(a)] - pose[i(b)]))

    # human proportions (H36M subjects: upper arm 265-301 mm, forearm 244-258, thigh 428-487)
    ratio = bone("left_shoulder", "left_elbow") / bone("left_elbow", "left_wrist")
    assert 0.7 < ratio < 1.6
    ratio = bone("right_shoulder", "right_elbow") / bone("left_shoulder", "left_elbow")
    assert 0.6 < ratio < 1.6
    height = pose[i("head"), 2] - min(pose[i("left_ankle"), 2], pose[i("right_ankle"), 2])
    assert 1000 < height < 2200, height  # upright, between 1 and 2.2 m
    assert pose[i("head"), 2] > pose[i("thorax"), 2] > pose[i("pelvis"), 2]

"""Crowded scenes (issue 22): labels move with the pasted people; the scoring counts joints
taken from a neighbour; the seeded set is the same every run."""

from __future__ import annotations

import numpy as np
import pytest

from poseviewer.skeleton import CPM14
from poseviewer.train2d.crowd import (
    LIMB_JOINTS,
    CrowdScore,
    Placement,
    Scene,
    compose_scene,
    random_scenes,
    score_scene,
)


def _stick_person(x0: float, y0: float) -> np.ndarray:
    """A standing CPM-14 person, 60 px tall, top-left near (x0, y0)."""
    rel = {"head_top": (10, 0), "neck": (10, 10), "right_shoulder": (4, 12),
           "right_elbow": (2, 22), "right_wrist": (1, 32), "left_shoulder": (16, 12),
           "left_elbow": (18, 22), "left_wrist": (19, 32), "right_hip": (6, 32),
           "right_knee": (5, 46), "right_ankle": (5, 60), "left_hip": (14, 32),
           "left_knee": (15, 46), "left_ankle": (15, 60)}
    return np.array([[x0 + rel[n][0], y0 + rel[n][1]] for n in CPM14.joints], float)


def _photo(colour: tuple[int, int, int], joints: np.ndarray) -> np.ndarray:
    """100 x 100 photo of one flat colour with a white 3x3 dot on every joint."""
    img = np.zeros((100, 100, 3), np.uint8)
    img[:] = colour
    for x, y in np.round(joints).astype(int):
        img[y - 1:y + 2, x - 1:x + 2] = 255
    return img


def test_labels_move_with_the_pasted_people() -> None:
    j0, j1 = _stick_person(20, 20), _stick_person(40, 10)
    lab = np.ones((2, 14), bool)
    photos = [_photo((200, 0, 0), j0), _photo((0, 0, 200), j1)]
    bg = np.full((200, 200, 3), 30, np.uint8)
    # person 0: doubled, then moved by (10, 5); person 1: as is, moved by (35, 40), over
    # person 0's left side
    pl = [Placement(2.0, (10.0, 5.0)), Placement(1.0, (35.0, 40.0))]
    sc = compose_scene(bg, photos, np.stack([j0, j1]), lab, pl, order=[0, 1])
    # hand-computed: head top of person 0 at (30, 20) -> (70, 45); of person 1 (50, 10)
    # -> (85, 50)
    h = CPM14.index("head_top")
    assert sc.joints[0, h] == pytest.approx([70.0, 45.0])
    assert sc.joints[1, h] == pytest.approx([85.0, 50.0])
    np.testing.assert_allclose(sc.joints[0], j0 * 2 + [10, 5])
    np.testing.assert_allclose(sc.joints[1], j1 + [35, 40])
    # extents: 60 px tall -> 120 and 60; boxes grow by a tenth of it
    assert sc.extent.tolist() == pytest.approx([120.0, 60.0])
    assert sc.boxes[1].tolist() == pytest.approx([41 + 35 - 6, 10 + 40 - 6,
                                                  59 + 35 + 6, 70 + 40 + 6])
    # the scene shows each person's own white dot at every moved label it keeps visible
    for i in range(2):
        for j in range(14):
            x, y = np.round(sc.joints[i, j]).astype(int)
            if sc.visible[i, j]:
                assert sc.image[y, x].min() > 200, (i, CPM14.joints[j])
    # away from both people the background stays
    assert sc.image[190, 5].tolist() == [30, 30, 30]
    # person 1 is pasted over person 0: person 0's joints under person 1's body are hidden,
    # the others stay visible; person 1 (on top) keeps every joint
    assert sc.visible[1].all()
    hidden = ~sc.visible[0]
    assert hidden[CPM14.index("left_shoulder")] and not hidden[CPM14.index("right_ankle")]
    for j in np.flatnonzero(hidden):
        x, y = np.round(sc.joints[0, j]).astype(int)
        assert sc.image[y, x, 2] > sc.image[y, x, 0]  # person 1's blue there, not red


def test_scoring_counts_right_wrong_and_taken_joints() -> None:
    j0, j1 = _stick_person(0, 0), _stick_person(100, 0)
    sc = Scene(image=np.zeros((80, 200, 3), np.uint8), joints=np.stack([j0, j1]),
               labelled=np.ones((2, 14), bool), visible=np.ones((2, 14), bool),
               boxes=np.zeros((2, 4)), extent=np.array([60.0, 60.0]), sources=(0, 1))
    pred = np.stack([j0.copy(), j1.copy()])
    lw = CPM14.index("left_wrist")
    pred[0, lw] = j1[lw] + [3, 0]          # taken from the neighbour (within 6 px)
    pred[0, CPM14.index("head_top")] += [0, 20]  # wrong, nobody's
    pred[1, CPM14.index("right_knee")] += [5, 0]  # right (5 <= 0.1 x 60)
    s = CrowdScore()
    score_scene(s, sc, pred)
    assert s.people == 2 and s.missed == 0
    assert s.wrong == 2 and s.from_neighbour == 1
    assert s.limb_total == 2 * len(LIMB_JOINTS) and s.limb_right == 2 * len(LIMB_JOINTS) - 1
    assert s.neighbour_share == 0.5
    s2 = CrowdScore()
    score_scene(s2, sc, np.stack([pred[0], np.full((14, 2), np.nan)]))
    assert s2.missed == 1 and s2.limb_total == 16 and s2.limb_right == 7


def test_random_scenes_are_seeded() -> None:
    rng = np.random.default_rng(0)
    joints = np.stack([_stick_person(20 + rng.uniform(0, 10), 20) for _ in range(8)])
    lab = np.ones((8, 14), bool)
    photos = [_photo((25 * k, 100, 50), joints[k]) for k in range(8)]
    a = list(random_scenes(lambda r: photos[r], joints, lab, np.arange(8), 3, seed=5))
    b = list(random_scenes(lambda r: photos[r], joints, lab, np.arange(8), 3, seed=5))
    for sa, sb in zip(a, b, strict=True):
        assert sa.sources == sb.sources and 2 <= len(sa.sources) <= 4
        np.testing.assert_array_equal(sa.image, sb.image)
        # every person's labels lie inside the scene and inside their own box
        assert (sa.joints >= 0).all() and (sa.joints[..., 0] < sa.image.shape[1]).all()
        assert (sa.joints[..., 0] >= sa.boxes[:, None, 0]).all()
        assert (sa.joints[..., 1] <= sa.boxes[:, None, 3]).all()


def test_training_with_neighbours_pastes_unlabelled_people_beside_the_target() -> None:
    from poseviewer.train2d.augment import AugmentConfig, make_batch, paste_neighbours

    size = 96
    # cache rows: row 0 the target (red body), rows 1-3 neighbours (blue bodies), each a
    # person of 60 px in the middle of a 96 px grey cache image
    j = _stick_person(38, 18)
    images = np.full((4, size, size, 3), 128, np.uint8)
    from poseviewer.train2d.crowd import person_mask

    body = person_mask(j, np.ones(14, bool), (size, size), 8.0) > 0.5
    images[0][body] = (220, 20, 20)
    for r in (1, 2, 3):
        images[r][body] = (20, 20, 220)
    joints = np.repeat(j[None], 4, 0).astype(np.float32)
    visible = np.ones((4, 14), bool)
    cfg = AugmentConfig(neighbours=1.0, neighbour_count=(2, 2), scale=(1.0, 1.0),
                        full_circle=0.0, small_rotation=0.0, translate=0.0, flip=0.0)
    # the target's crop (no augmentation): cache 96 px with enlarge 1.6 -> same pixels
    crop, xy, vis = images[0].copy(), joints[0].copy(), visible[0].copy()
    blue_before = (crop[..., 2] > 150).sum()
    new, new_vis = paste_neighbours(np.random.default_rng(3), crop, xy, vis, images, joints,
                                    visible, np.array([1, 2, 3]), 1.6, cfg)
    assert blue_before == 0
    blue = new[..., 2] > 150
    assert blue.sum() > 200  # two bodies pasted
    cols = np.flatnonzero(blue.any(0))
    assert cols.min() < 30 or cols.max() > 66  # beside the target, not on its centre line
    # the target's joints a neighbour covers are unlabelled, the others keep their red
    for k in range(14):
        x, y = np.round(xy[k]).astype(int)
        if blue[y, x]:
            assert not new_vis[k]
        elif new_vis[k]:
            assert new[y, x, 0] > 150
    assert new_vis.any()
    # through make_batch: probability 1 changes the crops, 0 leaves them exactly as before
    idx = np.array([0, 1, 2, 3])
    plain = make_batch(np.random.default_rng(0), images, joints, visible, idx, 1.6, size,
                       AugmentConfig(scale=(1.0, 1.0)))
    plain2 = make_batch(np.random.default_rng(0), images, joints, visible, idx, 1.6, size,
                        AugmentConfig(scale=(1.0, 1.0), neighbours=0.0))
    np.testing.assert_array_equal(plain[0], plain2[0])
    crowded = make_batch(np.random.default_rng(0), images, joints, visible, idx, 1.6, size,
                         AugmentConfig(scale=(1.0, 1.0), neighbours=1.0))
    assert crowded[0].shape == plain[0].shape
    assert not np.array_equal(crowded[0], plain[0])


def test_a_tiny_training_run_with_neighbours_resumes(tmp_path) -> None:
    import json

    from test_train2d import synthetic_cache

    from poseviewer.train2d.loop import TrainConfig, read_log, train

    cache = synthetic_cache(tmp_path / "cache")
    cfg = TrainConfig(cache_dir=str(cache), out_dir=str(tmp_path / "run"), preset="tiny-test",
                      epochs=2, fusion_epochs=0, batch_size=4, n_val=8, max_batches=2,
                      warmup_steps=1, threads=1, progress=False, neighbours=1.0)
    train(TrainConfig(**{**cfg.__dict__, "epochs": 1}), log=lambda s: None)
    out = train(cfg, resume=True, log=lambda s: None)
    assert [r["epoch"] for r in read_log(out / "log.jsonl")] == [1, 2]
    assert json.loads((out / "train_config.json").read_text())["neighbours"] == 1.0


def test_eval_2d_crowd_prints_the_baseline_first_and_the_prior_helps_or_keeps(tmp_path,
                                                                              capsys) -> None:
    """`poseviewer eval-2d --crowd --baseline` on a few real scenes: the prior-off rows come
    first, the JSON holds every path, and the prior takes no more joints from neighbours."""
    import argparse
    import json

    from conftest import require_shared

    from poseviewer.commands import eval_2d

    require_shared("data", "lspet", "annotations.npz")
    parser = argparse.ArgumentParser()
    eval_2d.add_arguments(parser)
    out = tmp_path / "crowd.json"
    args = parser.parse_args(["--crowd", "--scenes", "4", "--baseline", "--no-detector",
                              "--single-pass", "--json", str(out)])
    assert eval_2d.run(args) == 0
    text = capsys.readouterr().out
    assert text.index("| boxes, prior off |") < text.index("| boxes |")
    rep = json.loads(out.read_text())
    off, on = rep["boxes, prior off"], rep["boxes"]
    assert off["people"] == on["people"] == rep["people"] >= 8
    assert off["limb_joints"] == on["limb_joints"] > 0
    assert on["from_neighbour"] <= off["from_neighbour"]

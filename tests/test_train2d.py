"""Training the 2D network: data mapping, split, cache, augmentation, targets, loss, PCK
(hand-computed cases and round trips) and a tiny end-to-end run with resume and fusion."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from poseviewer.cnn import load_cpm
from poseviewer.skeleton import CPM14, LSP14
from poseviewer.train2d.augment import FLIP, AugmentConfig, make_batch, sample_affine, warp_sample
from poseviewer.train2d.data import build_cache, load_annotations, load_cache, split_indices
from poseviewer.train2d.evaluate import pck
from poseviewer.train2d.loop import TrainConfig, plot_log, read_log, train
from poseviewer.train2d.targets import belief_targets, stage_losses


def write_lsp(tmp_path, n=6, size=(160, 120)):
    """A synthetic LSP-extended folder: black photos with a white dot on every joint."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    joints = np.zeros((n, 14, 3), np.float32)
    names = []
    for i in range(n):
        h, w = size
        xy = np.stack([rng.uniform(30, w - 30, 14), rng.uniform(30, h - 30, 14)], -1)
        joints[i, :, :2] = xy
        joints[i, :, 2] = 1
        joints[i, i % 14] = (0, 37, 0)  # an unlabelled joint, as in the data (x or y = 0)
        img = np.zeros((h, w, 3), np.uint8)
        names.append(f"im{i + 1:05d}.jpg")
        cv2.imwrite(str(tmp_path / "images" / names[-1]), img)
    np.savez(tmp_path / "annotations.npz", joints=joints, image_names=np.array(names))
    return joints, names


def test_annotations_are_reordered_to_cpm_and_unlabelled_masked(tmp_path) -> None:
    raw, _ = write_lsp(tmp_path)
    ann = load_annotations(tmp_path)
    for cpm_j, name in enumerate(CPM14.joints):
        lsp_j = LSP14.index(name)
        np.testing.assert_array_equal(ann.joints[:, cpm_j], raw[:, lsp_j, :2])
        np.testing.assert_array_equal(ann.visible[:, cpm_j], raw[:, lsp_j, 2] > 0)
    assert ann.visible.sum() == raw[..., 2].sum() == 6 * 14 - 6
    assert ann.joints[0, CPM14.index("right_ankle")].tolist() == [0, 37]  # LSP joint 0


def test_split_is_fixed_disjoint_and_complete() -> None:
    tr, va = split_indices(9000, 1000, seed=2017)
    tr2, va2 = split_indices(9000, 1000, seed=2017)
    assert len(va) == 1000 and len(tr) == 8000
    np.testing.assert_array_equal(va, va2)
    assert not set(tr) & set(va)
    assert sorted(set(tr) | set(va)) == list(range(9000))
    assert not np.array_equal(va, split_indices(9000, 1000, seed=1)[1])
    with pytest.raises(ValueError):
        split_indices(10, 10)


def dots(size, points, radius=2):
    img = np.zeros((size, size, 3), np.uint8)
    for x, y in points:
        cv2.circle(img, (int(round(x)), int(round(y))), radius, (255, 255, 255), -1)
    return img


def brightest(img):
    g = cv2.GaussianBlur(img[..., 0].astype(np.float32), (0, 0), 1.5)
    y, x = np.unravel_index(np.argmax(g), g.shape)
    return np.array([x, y], float)


def test_cache_crops_follow_the_joints(tmp_path) -> None:
    root = tmp_path / "lsp"
    root.mkdir()
    raw, names = write_lsp(root, n=3)
    # draw one dot, on the left wrist, in each photo
    j = LSP14.index("left_wrist")
    for i, name in enumerate(names):
        img = dots(200, [raw[i, j, :2]], radius=7)[:160, :120]
        cv2.imwrite(str(root / "images" / name), img)
    out = build_cache(root, tmp_path / "cache", size=64, enlarge=2.2, progress=False)
    cache = load_cache(out)
    assert cache.images.shape == (3, 64, 64, 3) and cache.enlarge == 2.2
    jc = CPM14.index("left_wrist")
    for i in range(3):
        ext = np.ptp(raw[i, raw[i, :, 2] > 0, :2], axis=0).max()
        # the cached joint sits on the dot (dot blurred by resizing; 1.5 cache px)
        assert np.linalg.norm(brightest(cache.images[i]) - cache.joints[i, jc]) < 1.5
        # the visible joints' extent is 64 / 2.2 cache pixels
        vis = cache.visible[i]
        assert np.ptp(cache.joints[i, vis], axis=0).max() == pytest.approx(64 / 2.2, rel=1e-4)
        assert ext > 0


@pytest.mark.parametrize("seed", range(6))
def test_augmented_joints_follow_the_pixels_and_flip_swaps_sides(seed) -> None:
    rng = np.random.default_rng(seed)
    joints = rng.uniform(60, 132, size=(14, 2)).astype(np.float32)
    joints[CPM14.index("right_elbow")] = rng.uniform(84, 108, size=2)  # stays in the crop
    visible = np.ones(14, bool)
    k = CPM14.index("right_elbow")
    img = dots(192, [joints[k]], radius=3)
    m, flip = sample_affine(rng, 192, 2.2, 128, AugmentConfig(flip=0.5))
    crop, xy, vis = warp_sample(img, joints, visible, m, flip, 128)
    jout = FLIP[k] if flip else k  # a flipped right elbow becomes the left elbow
    assert np.linalg.norm(brightest(crop) - xy[jout]) < 1.5
    assert vis.all()
    if flip:
        assert CPM14.joints[FLIP[k]] == "left_elbow"


def test_evaluation_crop_is_a_1_6_box_without_augmentation() -> None:
    cache = np.zeros((1, 192, 192, 3), np.uint8)
    ext = 192 / 2.2
    corners = [[96 - ext / 2, 96 - ext / 2], [96 + ext / 2, 96 + ext / 2]]
    joints = np.array(corners + [[96, 96]] * 12, np.float32)[None]
    _, xy, _ = make_batch(np.random.default_rng(0), cache, joints, np.ones((1, 14), bool),
                          np.array([0]), 2.2, 128, None)
    # the person's extent (ext) becomes 128 / 1.6 = 80 input pixels, centred
    np.testing.assert_allclose(xy[0, 0], [64 - 40, 64 - 40], atol=1e-4)
    np.testing.assert_allclose(xy[0, 1], [64 + 40, 64 + 40], atol=1e-4)


def test_belief_targets_by_hand() -> None:
    joints = torch.zeros(1, 14, 2)
    joints[0, 0] = torch.tensor([8.0, 12.0])  # stride 4 -> map (x=2, y=3)
    visible = torch.zeros(1, 14, dtype=torch.bool)
    visible[0, 0] = True
    joints[0, 1] = torch.tensor([20.0, 20.0])  # unlabelled: no map, no loss
    t, mask = belief_targets(joints, visible, 8, 4, 1.0)
    assert t.shape == (1, 15, 8, 8)
    assert t[0, 0, 3, 2] == pytest.approx(1.0)
    assert t[0, 0, 3, 3] == pytest.approx(np.exp(-0.5))
    assert t[0, 0, 4, 3] == pytest.approx(np.exp(-1.0))
    assert float(t[0, 1].abs().max()) == 0.0
    torch.testing.assert_close(t[0, 14], 1 - t[0, 0])
    assert mask[0].tolist() == [1.0] + [0.0] * 13 + [1.0]


def test_stage_loss_is_masked_and_per_stage() -> None:
    target = torch.zeros(2, 15, 4, 4)
    mask = torch.ones(2, 15)
    mask[0, 3] = 0
    p1 = target.clone()
    p1[0, 3, 1, 1] = 0.5  # masked channel: no loss
    p2 = target.clone()
    p2[1, 4, 2, 2] = 0.5  # counted: 0.25 summed, / batch of 2
    losses = stage_losses([p1, p2], target, mask)
    torch.testing.assert_close(losses, torch.tensor([0.0, 0.125]))


def test_pck_by_hand() -> None:
    ls, rh = CPM14.index("left_shoulder"), CPM14.index("right_hip")
    gt = np.zeros((2, 14, 2))
    gt[:, ls] = [0, 0]
    gt[:, rh] = [6, 8]  # torso 10 -> threshold 2 at alpha 0.2
    vis = np.ones((2, 14), bool)
    vis[0, 5] = False if ls != 5 else True
    vis[1, ls] = False  # no torso size: the whole person is excluded
    pred = gt.copy()
    pred[0, 0] += [1.9, 0]  # correct
    pred[0, 1] += [0, 2.1]  # wrong
    correct, evaluated = pck(pred, gt, vis)
    assert evaluated[1].sum() == 0
    assert evaluated[0].sum() == vis[0].sum()
    assert correct[0, 0] and not correct[0, 1]
    assert correct[0].sum() == vis[0].sum() - 1


def synthetic_cache(path, n=24, size=96):
    """Cache of dot images whose joints are the dots (learnable)."""
    rng = np.random.default_rng(1)
    images = np.zeros((n, size, size, 3), np.uint8)
    joints = np.zeros((n, 14, 2), np.float32)
    for i in range(n):
        c = size / 2
        joints[i] = c + rng.uniform(-size / 4.4, size / 4.4, size=(14, 2))
        joints[i, 0] = [c - size / 4.4, c - size / 4.4]
        joints[i, 13] = [c + size / 4.4, c + size / 4.4]
        for j, (x, y) in enumerate(joints[i]):
            cv2.circle(images[i], (int(x), int(y)), 2, (255, 16 * j, 255 - 16 * j), -1)
    path.mkdir()
    np.save(path / "images.npy", images)
    np.savez(path / "meta.npz", joints=joints, visible=np.ones((n, 14), bool),
             names=np.array([f"s{i}" for i in range(n)]))
    (path / "cache.json").write_text(json.dumps({"size": size, "enlarge": 2.2, "n": n}))
    return path


def stick_pose_model():
    from poseviewer.lifting import PoseModel3D

    mu = np.zeros((1, 3, 17))
    z = [900, 880, 480, 80, 920, 500, 80, 1150, 1400, 1500, 1650, 1400, 1150, 900, 1400, 1150,
         900]
    x = [0, -130, -130, -130, 130, 130, 130, 0, 0, 0, 0, 180, 200, 210, -180, -200, -210]
    mu[0, 0], mu[0, 2] = x, z
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(51, 2)))
    return PoseModel3D(mu, q.T.reshape(1, 2, 3, 17), np.ones((1, 3)))


def test_tiny_training_run_resumes_logs_plots_and_fuses(tmp_path) -> None:
    cache = synthetic_cache(tmp_path / "cache")
    model_path = tmp_path / "pose3d.safetensors"
    stick_pose_model().save(model_path)
    cfg = TrainConfig(cache_dir=str(cache), out_dir=str(tmp_path / "run"), preset="tiny-test",
                      epochs=2, fusion_epochs=1, pose_model=str(model_path), batch_size=4,
                      n_val=8, max_batches=3, warmup_steps=2, threads=1, progress=False)
    # epoch 1 alone first (plain CPM), then resume for epoch 2, which fuses
    train(TrainConfig(**{**cfg.__dict__, "epochs": 1, "fusion_epochs": 0}), log=lambda s: None)
    recs = read_log(tmp_path / "run" / "log.jsonl")
    assert [r["epoch"] for r in recs] == [1] and not recs[0]["fusion"]
    out = train(cfg, resume=True, log=lambda s: None)  # epoch 2 of 2: fusion
    recs = read_log(out / "log.jsonl")
    assert [r["epoch"] for r in recs] == [1, 2]
    assert recs[1]["fusion"] and len(recs[1]["val_pck_fusion"]) == 3
    assert recs[1]["step"] == 6
    model = load_cpm(out / "last.safetensors")
    assert model.config.name == "tiny-test" and model.fusion_logit is not None
    # the fusion weights were trained in epoch 2 (their initial value is 0.5 everywhere)
    assert float((model.fusion_weights() - 0.5).abs().max()) > 0
    split = json.loads((out / "split.json").read_text())
    assert len(split["val"]) == 8
    png = plot_log(out / "log.jsonl", out / "again.png")
    assert png.stat().st_size > 1000


def test_training_step_reduces_the_loss_on_one_batch(tmp_path) -> None:
    from poseviewer.cnn import LiftingCPM
    from poseviewer.cnn.config import tiny_test
    from poseviewer.train2d.loop import _step

    torch.manual_seed(0)
    cache = load_cache(synthetic_cache(tmp_path / "cache", n=8))
    model = LiftingCPM(tiny_test(fusion=False))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    cfg = TrainConfig(cache_dir="", out_dir="", sigma=1.0)
    idx = np.arange(8)
    losses = [_step(model, opt, cache, idx, np.random.default_rng(0), None, cfg, 3e-3,
                    False).sum() for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0]


def test_batchnorm_folds_into_an_equal_plain_network() -> None:
    from poseviewer.cnn import LiftingCPM
    from poseviewer.cnn.config import tiny_test
    from poseviewer.train2d.bn import add_batchnorm, fold_batchnorm, has_batchnorm

    torch.manual_seed(0)
    model = add_batchnorm(LiftingCPM(tiny_test(fusion=True)))
    assert has_batchnorm(model)
    x = torch.randn(6, 3, 64, 64)
    model.train()
    for _ in range(3):  # move the running statistics away from their initial values
        model(x * 2 + 0.3, read_joints=False)
    model.eval()
    with torch.no_grad():
        for layer in model.layers.values():
            if isinstance(layer, torch.nn.Sequential):
                layer[1].weight.uniform_(0.5, 1.5)
                layer[1].bias.uniform_(-0.2, 0.2)
        model.fusion_logit.fill_(0.3)
        plain = fold_batchnorm(model)
        assert not has_batchnorm(plain)
        for a, b in zip(model(x).stages, plain(x).stages, strict=True):
            torch.testing.assert_close(a.cnn, b.cnn, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(plain.fusion_logit, model.fusion_logit)


def test_visibility_calibration_separates_right_from_wrong_joints() -> None:
    """Hand-made confidences: right joints 0.5-0.9, wrong ones 0.05-0.45, plus 5 right
    joints at 0.1. Youden's J is best just above 0.45 (all wrong dropped, 95 of 100 right
    kept); asking to keep 99 % of the right joints forces the threshold below 0.1."""
    from poseviewer.train2d.ship import calibrate_visibility

    right = np.r_[np.linspace(0.5, 0.9, 95), np.full(5, 0.1)]
    wrong = np.linspace(0.05, 0.45, 100)
    conf = np.r_[right, wrong][None]
    correct = np.r_[np.ones(100, bool), np.zeros(100, bool)][None]
    evaluated = np.ones_like(correct)
    best = calibrate_visibility(conf, correct, evaluated, min_right_kept=0.9)
    assert 0.45 <= best["threshold"] < 0.5
    assert best["right_kept"] == 0.95 and best["wrong_kept"] == 0.0
    strict = calibrate_visibility(conf, correct, evaluated, min_right_kept=0.99)
    assert strict["threshold"] < 0.1 and strict["right_kept"] == 1.0


def test_left_right_diagnostic_counts_mirrored_images() -> None:
    """An image whose prediction is its labels mirrored left/right counts as mirrored and
    scores fully once swapped; an exact prediction does not count; a joint-wise small miss
    changes nothing."""
    from poseviewer.skeleton import CPM14
    from poseviewer.train2d.ship import left_right_diagnostic

    rng = np.random.default_rng(0)
    gt = rng.uniform(45, 55, (3, 14, 2))
    for a, b in CPM14.flip_pairs:  # the two sides 60 px apart: a mix-up is always wrong
        gt[:, a, 0] -= 30
        gt[:, b, 0] += 30
    # torso (left shoulder to right hip) about 60 px: tolerance about 12 px
    vis = np.ones((3, 14), bool)
    pred = gt.copy()
    pred[1] = gt[1, CPM14.flip_permutation()]  # image 1: sides mixed up
    pred[2, 0] += 5.0  # image 2: one joint a little off, still right
    out = left_right_diagnostic(pred, gt, vis)
    # image 1 gets its 2 centre joints right as given, all 14 once swapped
    centre = 14 - 2 * len(CPM14.flip_pairs)
    assert out["mirrored"] == 1 and out["images"] == 3
    assert out["pck_swapped"] == 1.0
    assert out["pck"] == pytest.approx((14 + centre + 14) / 42)

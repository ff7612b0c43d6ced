"""Mirror test-time augmentation (``CPMConfig.flip_test``): the map mirroring is exact
where it can be checked by hand, and the network averages each stage's logits with the
mirrored-back logits of the mirrored crop."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from poseviewer.cnn.config import tiny_test
from poseviewer.cnn.lifting_cpm import LiftingCPM, shift_x
from poseviewer.cnn.ops import gaussian_maps, read_joints_softmax
from poseviewer.skeleton import CPM14


def _net(flip: bool, residual: bool = True) -> LiftingCPM:
    cfg = replace(tiny_test(fusion=False), stage1=(("conv4_1_CPM", 1, 8), ("conv4_2_CPM", 1, 14)),
                  map_activation="softmax", joint_reading="softmax", stage_residual=residual,
                  flip_test=flip).validate()
    torch.manual_seed(3)
    return LiftingCPM(cfg).eval()


def test_shift_x_moves_linear_ramps_exactly() -> None:
    """Linear interpolation is exact on a ramp: shifting a + b x by d gives a + b (x - d)
    away from the repeated edge columns, for positive, negative and whole shifts."""
    x = torch.arange(12, dtype=torch.float64)
    ramp = (2.0 + 0.5 * x).expand(2, 3, 5, 12)
    for d in (0.75, -0.75, 2.0, -1.25, 0.0):
        out = shift_x(ramp, d)
        inner = slice(3, 9)
        expect = 2.0 + 0.5 * (x - d)
        torch.testing.assert_close(out[..., inner], expect[inner].expand_as(out[..., inner]))


def test_mirror_maps_puts_a_joint_at_the_mirrored_crop_pixel() -> None:
    """A Gaussian drawn for crop pixel (x, y) of joint j, mirrored, peaks at crop pixel
    (size - 1 - x, y) in the channel of j's mirror joint."""
    net = _net(flip=True)
    size, stride = net.config.input_size, net.config.stride
    h = size // stride
    rng = np.random.default_rng(0)
    crop_xy = rng.uniform(12, size - 12, (1, 14, 2))
    maps = gaussian_maps(torch.from_numpy(crop_xy / stride).float(), h, h, 1.0)
    maps = torch.cat([maps, 1 - maps.amax(1, keepdim=True)], 1)
    mirrored = net.mirror_maps(maps, size)
    xy, _ = read_joints_softmax(mirrored[:, :14].double())
    expect = crop_xy.copy()
    expect[..., 0] = size - 1 - expect[..., 0]
    expect = expect[:, CPM14.flip_permutation()]
    np.testing.assert_allclose(xy.numpy() * stride, expect, atol=0.25)


def test_stage_one_averages_the_mirrored_logits() -> None:
    """Stage 1 with flip_test = (z(x) + mirror(z(mirrored x))) / 2, computed here from the
    same weights without flip_test; the reported joints are read from those logits."""
    flip, plain = _net(flip=True), _net(flip=False)
    plain.load_state_dict(flip.state_dict())
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        got = flip(x).stages[0]
        z = plain(x).stages[0].logits
        zm = plain(x.flip(-1)).stages[0].logits
        expect = 0.5 * (z + plain.mirror_maps(zm, 64))
    torch.testing.assert_close(got.logits, expect, atol=1e-5, rtol=1e-5)
    b = torch.exp(expect - expect.amax((-2, -1), keepdim=True))
    xy, _ = read_joints_softmax(b)
    torch.testing.assert_close(got.joints, xy, atol=1e-4, rtol=0)
    assert got.joints.shape == (3, 14, 2)


def test_training_mode_ignores_flip_test_and_linear_maps_refuse_it() -> None:
    """Training runs the plain network (the logits of one pass); flip_test needs logits."""
    flip, plain = _net(flip=True), _net(flip=False)
    plain.load_state_dict(flip.state_dict())
    flip.train()
    plain.train()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(flip(x).stages[-1].logits, plain(x).stages[-1].logits)
    with pytest.raises(ValueError, match="flip_test"):
        replace(tiny_test(fusion=False), flip_test=True).validate()


def test_estimator_switch_and_cli_flag() -> None:
    """``Estimator.flip_test`` turns the mirror pass on and off on a softmax network; a
    network with linear maps stays single-pass with a note; ``--single-pass`` reaches it."""
    import argparse

    from poseviewer.commands import estimate as estimate_cmd
    from poseviewer.estimator import Estimator

    est = Estimator(_net(flip=False), None, device="cpu", detector=None, flip_test=True)
    assert est.flip_test and est.model.config.flip_test
    est.flip_test = False
    assert not est.model.config.flip_test and est.notes == []
    linear = Estimator(LiftingCPM(tiny_test(fusion=False)), None, device="cpu",
                       detector=None, flip_test=True)
    assert not linear.flip_test
    assert any("mirror test-time augmentation" in n for n in linear.notes)
    from poseviewer.commands._options import EstimateOptions, EstimatorSettings

    parser = argparse.ArgumentParser()
    estimate_cmd.add_arguments(parser)

    def settings(*extra: str) -> EstimatorSettings:
        return EstimateOptions.from_args(parser.parse_args(["x.jpg", "--out", "o",
                                                            *extra])).estimator

    single = estimate_cmd.load_estimator(settings("--single-pass"))
    assert not single.flip_test
    default = estimate_cmd.load_estimator(settings())
    # the elevation search is the default (--elevation-search: the same); it and
    # --no-elevation-search reach the 3D model through the plain settings a Ray actor gets
    import dataclasses
    import json

    from poseviewer.lifting.spec import ELEVATIONS_DEG, LEVEL

    assert default.elevation_search and default.pose_model.elevations == ELEVATIONS_DEG
    assert settings("--elevation-search") == settings()
    plain = json.loads(json.dumps(dataclasses.asdict(settings("--elevation-search"))))
    searching = estimate_cmd.load_estimator(EstimatorSettings(**plain))
    assert searching.elevation_search and searching.pose_model.elevations == ELEVATIONS_DEG
    assert searching._model_info()["elevation_search"] is True
    plain = json.loads(json.dumps(dataclasses.asdict(settings("--no-elevation-search"))))
    level = estimate_cmd.load_estimator(EstimatorSettings(**plain))
    assert not level.elevation_search and level.pose_model.elevations == LEVEL
    assert level._model_info()["elevation_search"] is False
    from poseviewer.cnn import load_cpm
    from poseviewer.paths import DEFAULT_CNN

    assert default.flip_test == load_cpm(DEFAULT_CNN).config.flip_test

"""The CPM networks: configs, stage wiring, legacy resize, SAME pooling, centre map, fusion."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from poseviewer.cnn import (
    Cancelled,
    CancelToken,
    CPMConfig,
    LiftingCPM,
    count_parameters,
    release_personnet,
    release_posenet,
    small_cpu,
    tiny_test,
)
from poseviewer.cnn.ops import (
    avg_pool_same,
    centre_map,
    gaussian_maps,
    legacy_resize,
    read_joints_grid,
    read_joints_release,
)
from poseviewer.skeleton import CPM_TO_H36M_SLOTS, CPM_TO_H36M_SOURCES

torch.set_num_threads(1)


# ---- configs -------------------------------------------------------------------------------
def test_release_parameter_counts_match_the_spec():
    assert count_parameters(LiftingCPM(release_posenet())) == 29_852_058
    assert count_parameters(LiftingCPM(release_personnet())) == 25_714_372


@pytest.mark.parametrize("make", [release_posenet, release_personnet, small_cpu, tiny_test])
def test_config_json_round_trip(make):
    cfg = make()
    again = CPMConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.stride == cfg.stride and again.num_maps == cfg.num_maps


def test_bad_config_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="num_maps = "):
        CPMConfig.from_dict({**tiny_test().to_dict(), "num_joints": 10})
    with pytest.raises(ValueError, match="unknown CPMConfig keys"):
        CPMConfig.from_dict({**tiny_test().to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="granularity"):
        tiny_test().with_fusion(granularity="pixel")


def test_release_posenet_stage_inputs_are_144_channels():
    net = LiftingCPM(release_posenet())
    assert net.layers["Mconv1_stage2"].in_channels == 144
    assert net.layers["Mconv7_stage6"].out_channels == 15
    assert net.fusion_logit is None
    person = LiftingCPM(release_personnet())
    assert person.layers["Mconv1_stage4"].in_channels == 129


# ---- ops against hand-computed values ------------------------------------------------------
def test_legacy_resize_upsamples_with_source_equal_destination_times_ratio():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    y = legacy_resize(x, (1, 6))
    # src = j * 4/6 -> 0, .667, 1.333, 2, 2.667, 3.333 (clamped to the last pixel)
    expected = torch.tensor([[0.0, 4 / 6, 8 / 6, 2.0, 16 / 6, 3.0]])
    assert torch.allclose(y, expected, atol=1e-6)
    assert y[0, -1].item() == 3.0  # a + (b - a) * w returns the source exactly at the edge


def test_legacy_resize_downsamples_by_picking_not_averaging():
    x = torch.arange(16.0).reshape(4, 4)
    y = legacy_resize(x, (2, 2))
    assert torch.equal(y, torch.tensor([[0.0, 2.0], [8.0, 10.0]]))


def test_legacy_resize_2d_matches_explicit_formula():
    rng = np.random.default_rng(0)
    x = rng.random((5, 7)).astype(np.float32)
    out_h, out_w = 11, 13
    y = legacy_resize(torch.from_numpy(x)[None, None], (out_h, out_w))[0, 0].numpy()
    sy, sx = np.float32(5 / 11), np.float32(7 / 13)
    for i in range(out_h):
        for j in range(out_w):
            fy, fx = np.float32(i) * sy, np.float32(j) * sx
            y0, x0 = int(np.floor(fy)), int(np.floor(fx))
            y1, x1 = min(y0 + 1, 4), min(x0 + 1, 6)
            wy, wx = fy - np.float32(y0), fx - np.float32(x0)
            top = x[y0, x0] + (x[y0, x1] - x[y0, x0]) * wx
            bot = x[y1, x0] + (x[y1, x1] - x[y1, x0]) * wx
            assert y[i, j] == pytest.approx(top + (bot - top) * wy, abs=1e-6)


def test_same_average_pooling_excludes_the_padding():
    ramp = torch.arange(368.0)[None, None, None, :].expand(1, 1, 368, 368)
    pooled = avg_pool_same(ramp, 9, 8)
    assert pooled.shape == (1, 1, 46, 46)
    expected = [np.mean(np.arange(8 * j, min(8 * j + 9, 368))) for j in range(46)]
    assert expected[-1] == 363.5
    assert np.allclose(pooled[0, 0, 0].numpy(), expected)
    assert np.allclose(pooled[0, 0, :, 5].numpy(), expected[5])
    # torch's ceil_mode pooling without padding agrees (the spec's equivalent)
    ref = torch.nn.functional.avg_pool2d(ramp, 9, 8, ceil_mode=True, count_include_pad=False)
    assert torch.allclose(pooled, ref)


def test_centre_map_peaks_at_the_crop_centre_with_sigma_25():
    c = centre_map(368, 25.0)[0, 0]
    assert c.shape == (368, 368)
    assert c[184, 184].item() == 1.0
    assert c[184, 209].item() == pytest.approx(math.exp(-1), rel=1e-6)
    assert c[159, 184].item() == pytest.approx(math.exp(-1), rel=1e-6)
    assert c.argmax().item() == 184 * 368 + 184


def test_gaussian_maps_peak_at_the_points():
    pts = torch.tensor([[[3.0, 5.0], [10.0, 2.0], [float("nan"), 1.0]]])
    maps = gaussian_maps(pts, 12, 16, sigma=1.5)
    assert maps.shape == (1, 3, 12, 16)
    assert maps[0, 0, 5, 3] == 1.0 and maps[0, 1, 2, 10] == 1.0
    assert maps[0, 0, 5, 4].item() == pytest.approx(math.exp(-1 / (2 * 1.5**2)))
    assert maps[0, 2].abs().sum() == 0


def test_joint_reading_first_maximum_and_column_mean_confidence():
    maps = torch.zeros(1, 2, 5, 5)
    maps[0, 0, 1, 3] = 2.0
    maps[0, 0, 2, 1] = 2.0  # tie: the first in row-major order wins -> (x=3, y=1)
    maps[0, 1, 3, 0] = 5.0
    xy, conf = read_joints_grid(maps)
    assert xy[0].tolist() == [[3.0, 1.0], [0.0, 3.0]]
    assert conf[0].tolist() == pytest.approx([0.4, 1.0])  # column means: 2/5; 5/5
    up, _ = read_joints_release(maps, 20)
    assert up[0, 0].tolist() == [12, 4]  # map (3, 1) -> crop (3 * 4, 1 * 4)


# ---- stage wiring, fusion --------------------------------------------------------------------
class FakePoseModel:
    """Projects CPM joints through the H36M slots with a known shift; lifted iff >= 5 visible."""

    def __init__(self, shift=(0.25, -0.5), refuse=()):
        self.shift = torch.tensor(shift, dtype=torch.float64)
        self.refuse = list(refuse)  # people reported as not lifted whatever is visible
        self.calls = []

    def lift(self, joints, visible, as_numpy=False):
        self.calls.append((joints.clone(), visible.clone()))
        n = joints.shape[0]
        j17 = torch.full((n, 17, 2), float("nan"), dtype=torch.float64)
        j17[:, torch.as_tensor(CPM_TO_H36M_SLOTS)] = joints[:, torch.as_tensor(CPM_TO_H36M_SOURCES)]
        j17 = j17 + self.shift
        lifted = visible.sum(-1) >= 5
        lifted[self.refuse] = False
        return SimpleNamespace(lifted=lifted, joints_2d=j17)


def _tiny(fusion=True, all_visible=False, **kw):
    torch.manual_seed(0)
    cfg = tiny_test(fusion=fusion)
    if all_visible:  # every joint visible: everyone is lifted whatever the random weights
        cfg = CPMConfig.from_dict({**cfg.to_dict(), "visibility_threshold": -1e9})
    if kw:
        cfg = cfg.with_fusion(**kw)
    return LiftingCPM(cfg)


def test_stage_shapes_and_outputs_without_a_3d_model():
    net = _tiny()
    out = net(torch.randn(2, 3, 64, 64))
    assert len(out.stages) == 3
    for s in out.stages:
        assert s.cnn.shape == (2, 15, 16, 16)
        assert s.fused is s.cnn and s.projected is None
        assert s.joints.shape == (2, 14, 2) and s.visible.dtype == torch.bool


def test_fusion_off_reproduces_the_plain_cpm():
    net = _tiny(fusion=True)
    plain = LiftingCPM(tiny_test(fusion=False))
    state = {k: v for k, v in net.state_dict().items() if k != "fusion_logit"}
    plain.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    a = net(x).final.fused  # no 3D model attached -> plain
    plain.attach_pose_model(FakePoseModel())  # fusion disabled in the config -> ignored
    b = plain(x).final.fused
    assert torch.equal(a, b)


def test_fusion_maths_and_projected_maps():
    net = _tiny(all_visible=True, sigma=1.0, init_weight=0.7)
    model = FakePoseModel(shift=(0.0, 0.0), refuse=[1])  # person 1: the lifting fails
    net.attach_pose_model(model)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = net(x)
    assert len(model.calls) == 3  # one batched lift per stage
    for t, s in enumerate(out.stages):
        assert s.lifted.tolist() == [True, False, True]
        lifted = s.lifted
        assert s.projected[1].abs().sum() == 0
        # projected maps peak at the (integer) joints they were drawn from, with the
        # Gaussian's hand values beside the peak: exp(-1/2) one pixel away (sigma = 1),
        # exp(-1) one pixel away diagonally
        for p in (0, 2):
            for j in range(14):
                xx, yy = s.joints[p, j].long().tolist()
                assert s.projected[p, j, yy, xx].item() == pytest.approx(1.0)
                nx = xx + 1 if xx + 1 < 16 else xx - 1
                ny = yy + 1 if yy + 1 < 16 else yy - 1
                assert s.projected[p, j, yy, nx].item() == pytest.approx(math.exp(-0.5))
                assert s.projected[p, j, ny, nx].item() == pytest.approx(math.exp(-1.0))
        w = 0.7
        bhat = gaussian_maps(s.joints, 16, 16, 1.0)
        expected = torch.cat([w * s.cnn[:, :14] + (1 - w) * bhat, s.cnn[:, 14:]], dim=1)
        expected = torch.where(lifted[:, None, None, None], expected, s.cnn)
        assert torch.allclose(s.fused, expected, atol=1e-5)
        assert s.weight.item() == pytest.approx(0.7)
        if t + 1 < len(out.stages):  # the fused maps feed the next stage
            feat = net.trunk(x)
            pooled = net.pooled_centre(3, 64, feat)
            nxt = net._head(net._stages[t], torch.cat([s.fused, feat, pooled], 1))
            assert torch.allclose(nxt, out.stages[t + 1].cnn, atol=1e-5)


def test_not_lifted_people_pass_the_cnn_maps():
    net = _tiny()
    net.attach_pose_model(FakePoseModel())
    # visibility threshold above any confidence -> nobody visible -> nobody lifted
    net.config = net.config.__class__.from_dict({**net.config.to_dict(),
                                                 "visibility_threshold": 1e9})
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64))
    for s in out.stages:
        assert not s.lifted.any()
        assert torch.equal(s.fused, s.cnn)
        assert s.projected.abs().sum() == 0


def test_recomputed_background_and_per_joint_weights():
    net = _tiny(all_visible=True, background="recompute", granularity="joint")
    assert net.fusion_logit.shape == (3, 15)
    net.attach_pose_model(FakePoseModel(shift=(0.5, 0.5)))
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 64))
    s = out.stages[0]
    assert s.lifted.all()
    bg = 1 - s.projected[:, :14].amax(1)
    assert torch.allclose(s.projected[:, 14], bg)
    # shifted projection: the peak pixel is the one nearest to joint + 0.5
    xx, yy = (s.joints[0, 0] + 0.5).floor().long().tolist()
    assert s.projected[0, 0, yy, xx] == s.projected[0, 0].max()
    # per-joint weights: each channel fused with its own w
    with torch.no_grad():
        net.fusion_logit[0] = torch.linspace(-2, 2, 15)
        out = net(torch.randn(1, 3, 64, 64))
    s = out.stages[0]
    w = torch.sigmoid(torch.linspace(-2, 2, 15))[None, :, None, None]
    assert torch.allclose(s.fused, w * s.cnn + (1 - w) * s.projected, atol=1e-5)


def test_gradients_reach_the_network_and_the_fusion_weights():
    net = _tiny(all_visible=True)
    net.attach_pose_model(FakePoseModel())
    out = net(torch.randn(2, 3, 64, 64))
    assert all(s.lifted.all() for s in out.stages)
    loss = sum((s.fused**2).mean() for s in out.stages)
    loss.backward()
    assert net.fusion_logit.grad is not None
    assert net.layers["conv1_1"].weight.grad.abs().sum() > 0
    assert (net.fusion_logit.grad.abs() > 0).all()  # every stage's w_t gets a gradient


def test_stage_callback_and_cancel():
    net = _tiny()
    seen = []
    net(torch.randn(1, 3, 64, 64), on_stage=lambda t, n: seen.append((t, n)))
    assert seen == [(0, 3), (1, 3), (2, 3)]

    token = CancelToken()

    def cancel_after_first(t, n):
        if t == 0:
            token.cancel()

    seen.clear()
    with pytest.raises(Cancelled):
        net(torch.randn(1, 3, 64, 64), on_stage=lambda t, n: (seen.append(t),
                                                                cancel_after_first(t, n)),
            cancel=token)
    assert seen == [0]


def test_channels_last_gives_the_same_maps():
    net = _tiny(fusion=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = net(x).final.cnn
        net_cl = net.to(memory_format=torch.channels_last)
        b = net_cl(x.contiguous(memory_format=torch.channels_last)).final.cnn
    assert torch.allclose(a, b, atol=1e-5)


def test_weights_round_trip_and_bad_files(tmp_path):
    from poseviewer.cnn import WeightsError, load_cpm, read_cpm_metadata, save_cpm

    net = _tiny()
    path = save_cpm(net, tmp_path / "w.safetensors", metadata={"epochs": 3})
    meta = read_cpm_metadata(path)
    assert meta["config"] == net.config and meta["epochs"] == 3
    again = load_cpm(path)
    for k, v in net.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    with pytest.raises(WeightsError, match="not found"):
        load_cpm(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:50])
    with pytest.raises(WeightsError, match="cannot read"):
        load_cpm(bad)
    with pytest.raises(WeightsError, match="does not match"):
        load_cpm(path, config=tiny_test(fusion=False))


def test_min_visible_does_not_modify_the_lift_result():
    class AlwaysLifted(FakePoseModel):
        def lift(self, joints, visible, as_numpy=False):
            fit = super().lift(joints, visible)
            fit.lifted = torch.ones(joints.shape[0], dtype=torch.bool)
            return fit

    net = _tiny()
    net.config = CPMConfig.from_dict({**net.config.to_dict(), "visibility_threshold": 1e9})
    net.attach_pose_model(AlwaysLifted())
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64))
    assert not out.final.lifted.any()  # fewer than min_visible visible joints
    assert out.final.lift.lifted.all()  # the model's own answer is kept as it was


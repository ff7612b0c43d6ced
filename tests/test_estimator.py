"""Estimator, image loading, release preprocessing and person-centre detection."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import require_shared

import poseviewer.estimator as estimator_mod
from poseviewer.camera import DEFAULT_FOV_DEG, lift_along_rays
from poseviewer.cnn import LiftingCPM, release_personnet, save_cpm, tiny_test
from poseviewer.cnn.config import CPMConfig, PeakConfig
from poseviewer.cnn.preprocess import crop_centred, find_person_centres, normalise, warp_crop
from poseviewer.estimator import (
    Cancelled,
    CancelToken,
    Estimator,
    ImageError,
    ModelNotFoundError,
    WeightsError,
)
from poseviewer.imageio import load_image
from poseviewer.skeleton import CPM_TO_H36M_SLOTS, CPM_TO_H36M_SOURCES

torch.set_num_threads(1)


def _photo(h=120, w=90, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _estimator(fusion=False, **kw):
    torch.manual_seed(0)
    return Estimator(LiftingCPM(tiny_test(fusion=fusion)), device="cpu", **kw)


# ---- image loading ---------------------------------------------------------------------------
def _exif_jpeg(path: Path, img_bgr: np.ndarray, orientation: int) -> None:
    ok, buf = cv2.imencode(".jpg", img_bgr)
    assert ok
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHII", 0x0112, 3, 1, orientation) + struct.pack("<I", 0))
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = buf.tobytes()
    path.write_bytes(data[:2] + app1 + data[2:])


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :10] = 255  # a white band on the left
    _exif_jpeg(tmp_path / "r.jpg", img, 6)  # 6: rotate 90 degrees clockwise to display
    loaded = load_image(tmp_path / "r.jpg")
    assert loaded.rgb.shape == (40, 20, 3)
    assert loaded.rgb[:8].mean() > 240 and loaded.rgb[12:].mean() < 15  # band now on top


def test_gray_rgba_and_16_bit_files_and_arrays(tmp_path):
    gray = np.arange(30 * 20, dtype=np.uint8).reshape(30, 20)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    g = load_image(tmp_path / "g.png").rgb
    assert g.shape == (30, 20, 3) and np.array_equal(g[..., 1], gray)

    # RGBA: composited on the neutral grey (128): c * a + 128 * (1 - a), with a note
    rgba = np.zeros((20, 24, 4), np.uint8)
    rgba[..., 0] = 200  # red
    rgba[..., 3] = 128  # half transparent ...
    rgba[:5, :, 3] = 0  # ... fully transparent (black stored) ...
    rgba[-5:, :, 3] = 255  # ... and opaque rows
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    a = load_image(tmp_path / "a.png")
    assert a.rgb.shape == (20, 24, 3)
    half = round(200 * 128 / 255 + 128 * 127 / 255), round(128 * 127 / 255)  # 164, 64
    assert (a.rgb[8] == [half[0], half[1], half[1]]).all()
    assert (a.rgb[:5] == 128).all()  # transparent: the background, not the stored black
    assert (a.rgb[-5:] == [200, 0, 0]).all()
    assert any("transparent pixels composited" in m for m in a.messages)
    opaque = rgba.copy()
    opaque[..., 3] = 255
    b = load_image(opaque)  # arrays too; fully opaque: unchanged, no note
    assert (b.rgb == opaque[..., :3]).all() and not b.messages
    c = load_image(rgba)
    assert np.array_equal(c.rgb, a.rgb) and c.messages == a.messages

    deep = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    d = load_image(tmp_path / "d.png")
    assert d.rgb.dtype == np.uint8 and d.rgb[0, 5, 0] == 5 and d.rgb[15, 15, 2] == 255
    assert any("16-bit" in m for m in d.messages)

    arr = load_image(np.stack([deep] * 3, -1)).rgb
    assert arr[1, 1, 0] == 17
    assert load_image(np.full((16, 17, 4), 9, np.uint8)).rgb.shape == (16, 17, 3)
    assert load_image(np.full((16, 17), 0.5)).rgb[0, 0, 0] == 128


def test_bad_images_give_clear_errors(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image" * 10)
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(tmp_path / "junk.jpg")
    ok, buf = cv2.imencode(".png", _photo())
    (tmp_path / "cut.png").write_bytes(buf.tobytes()[:100])
    h, w = _photo().shape[:2]  # the header survives the cut: no word about the size limit
    with pytest.raises(ImageError, match=f"damaged or truncated \\({w}x{h} pixels"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="dtype"):
        load_image(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError, match="empty"):
        load_image(np.zeros((0, 4, 3), np.uint8))
    # too small to hold a person: refused with the size (files and arrays)
    cv2.imwrite(str(tmp_path / "dot.png"), np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageError, match=r"dot.png: the image is 1x1 pixels, too small"):
        load_image(tmp_path / "dot.png")
    with pytest.raises(ImageError, match="15x40 pixels, too small"):
        load_image(np.zeros((40, 15, 3), np.uint8))
    assert load_image(np.zeros((16, 16, 3), np.uint8)).rgb.shape == (16, 16, 3)


def test_huge_image_is_downscaled_with_a_message():
    loaded = load_image(np.zeros((400, 300, 3), np.uint8), max_pixels=30_000)
    h, w = loaded.rgb.shape[:2]
    assert h * w <= 30_000 and abs(w / h - 0.75) < 0.01
    assert "downscaled from 300x400" in loaded.messages[0]
    assert "above 0.03 megapixels" in loaded.messages[0]


# ---- preprocessing -----------------------------------------------------------------------------
def test_release_normalisation_is_division_in_float64():
    px = np.arange(256, dtype=np.uint8)
    got = normalise(np.stack([px] * 3, -1), tiny_test())[:, 0]
    expected = (px.astype(np.float64) / 255 - 0.5).astype(np.float32)
    assert np.array_equal(got, expected)
    bgr = tiny_test().__class__.from_dict({**tiny_test().to_dict(), "channel_order": "BGR"})
    assert normalise(np.array([[10, 20, 30]], np.uint8), bgr)[0, 0] == pytest.approx(30 / 255 - .5)


def test_crop_centred_equals_pad_then_crop():
    img = np.random.default_rng(0).random((50, 70, 3)).astype(np.float32)
    pad = 20
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    size = 32
    for xc, yc in [(0, 0), (69, 49), (35, 10), (5, 40)]:
        ref = padded[yc + pad - size // 2: yc + pad + size // 2,
                     xc + pad - size // 2: xc + pad + size // 2]
        assert np.array_equal(crop_centred(img, xc, yc, size), ref)
    assert not crop_centred(img, 500, 500, size).any()


def test_warp_crop_geometry_round_trips():
    cfg = tiny_test()
    img = np.zeros((200, 150, 3), np.uint8)
    img[120:123, 40:43] = 255  # a dot centred on (41, 121)
    for scale in (0.4, 1.0, 2.0):
        crop, to_image = warp_crop(img, np.array([50.0, 110.0]), scale, cfg)
        assert crop.shape == (64, 64, 3) and crop.dtype == np.float32
        bright = crop[..., 0]
        v, u = np.unravel_index(np.argmax(bright), bright.shape)
        back = to_image @ np.array([u, v, 1.0])
        assert np.abs(back - [41, 121]).max() <= 1.0 / scale + 0.5
    # outside the image the input is 0 (normalised grey), not black
    crop, _ = warp_crop(img, np.array([0.0, 0.0]), 1.0, cfg)
    assert (crop[:20, :20] == 0).all() and crop[40:, 40:].min() == -0.5


def test_person_centres_raster_order_thresholds_and_first_four():
    m = np.zeros((40, 60), np.float32)
    peaks = PeakConfig()
    # five isolated peaks above 0.4; the bottom-right one is the strongest
    spots = [(10, 5), (50, 5), (30, 20), (5, 35), (55, 35)]
    for k, (x, y) in enumerate(spots):
        m[y, x] = 0.5 + 0.01 * k
    m[35, 55] = 0.9
    centres = find_person_centres(m, peaks)
    assert centres == [(10, 5), (50, 5), (30, 20), (5, 35)]  # raster order, not strongest
    # a 4-connected plateau of 3 x 1 pixels -> one centre in the middle of its box
    m = np.zeros((20, 20), np.float32)
    m[10, 4:7] = 0.6
    assert find_person_centres(m, peaks) == [(5, 10)]
    # diagonal neighbours are separate regions (4-connectivity)
    m = np.zeros((20, 20), np.float32)
    m[5, 5] = m[6, 6] = 0.6
    assert find_person_centres(m, peaks) == [(5, 5), (6, 6)]
    # too weak to be a peak: 256 * 0.001 = 0.256 < 0.3 range
    m = np.zeros((20, 20), np.float32)
    m[5, 5] = 0.001
    assert find_person_centres(m, peaks) == []


def test_person_centres_keep_rule_uses_the_map_value_not_256_times_it():
    """A centre is kept when the map itself is > 0.4 there: 0.01 peaks (v = 2.56, a peak by
    the range test) are not people, and they must not push real ones out of the first four."""
    peaks = PeakConfig()
    m = np.zeros((40, 60), np.float32)
    # six weak peaks early in raster order, then two real people lower down
    for x in (5, 15, 25, 35, 45, 55):
        m[3, x] = 0.01
    m[20, 10] = 0.8
    m[30, 40] = 0.45
    assert find_person_centres(m, peaks) == [(10, 20), (40, 30)]
    # just below / just above the threshold on the map's own scale
    m = np.zeros((20, 20), np.float32)
    m[5, 5] = 0.39
    m[12, 12] = 0.41
    assert find_person_centres(m, peaks) == [(12, 12)]


# ---- estimator ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["rgb", "gray", "rgba", "uint16", "path"])
def test_estimate_on_each_kind_of_image(kind, tmp_path):
    est = _estimator()
    photo = _photo()
    image = {"rgb": photo, "gray": photo[..., 0], "rgba": np.dstack([photo, photo[..., :1]]),
             "uint16": photo.astype(np.uint16) * 257}.get(kind)
    if kind == "path":
        cv2.imwrite(str(tmp_path / "p.png"), photo[..., ::-1])
        image = tmp_path / "p.png"
    r = est.estimate(image)
    assert r.image_size == (90, 120)
    assert len(r.persons) == 1 and r.num_stages == 3
    p = r.persons[0]
    assert p.source in ("whole-image", "detector")
    for t, s in enumerate(p.stages):
        assert s.index == t
        assert s.cnn_maps.shape == (14, 16, 16) and s.cnn_maps.dtype == np.float32
        assert s.joints_2d.shape == (14, 2) and s.confidence.shape == (14,)
        # joints are argmax map pixels mapped through map_to_image
        grid = np.stack(np.unravel_index(s.cnn_maps.reshape(14, -1).argmax(1), (16, 16)), -1)
        expect = grid[:, ::-1] @ p.map_to_image[:, :2].T + p.map_to_image[:, 2]
        assert np.allclose(s.joints_2d, expect)
        assert s.fit is None and s.projected_maps is None
    if kind == "path":
        assert r.image_path == str(image)
    assert r.timings["total"] >= r.timings["cnn"] > 0


def test_user_boxes_are_cropped_at_their_scale():
    est = _estimator()
    r = est.estimate(_photo(), boxes=[[10, 20, 40, 100], [0, 0, 90, 120]])
    assert [p.source for p in r.persons] == ["user", "user"]
    m = r.persons[0].map_to_image
    # box height 80 covers box_fill of the 64 px crop; map pixel = stride crop pixels
    s = 0.8 * 64 / 80
    assert m[0, 0] == pytest.approx(4 / s)
    # the map centre (crop centre) lands on the box centre
    centre = m @ np.array([8.0, 8.0, 1.0])
    assert np.allclose(centre, [25, 60])
    with pytest.raises(ValueError, match="empty"):
        est.estimate(_photo(), boxes=[[10, 10, 5, 50]])


def test_boxes_wholly_outside_the_image_are_refused():
    est = _estimator()
    for box in ([100, 10, 140, 50], [-50, -50, 0, 30], [10, 120, 40, 160]):
        with pytest.raises(ValueError, match="outside the 90x120 image"):
            est.estimate(_photo(), boxes=[box])
    # partly outside is fine
    assert len(est.estimate(_photo(), boxes=[[-20, -20, 40, 50]]).persons) == 1


def test_downscaled_image_results_are_in_original_pixels(monkeypatch):
    """An image above max_pixels is analysed as a downscaled copy; boxes are given and
    results reported in original pixels. The expected joints come from running the same
    network on the downscaled copy (in its pixels) and scaling by the size ratio."""
    img = _photo(200, 200, seed=2)
    box = [100.0, 100.0, 200.0, 200.0]
    est = _estimator(max_pixels=10_000)
    r = est.estimate(img, boxes=[box])
    assert r.image_size == (200, 200)
    assert any("downscaled from 200x200 to 100x100" in m for m in r.messages)
    assert any("original image pixels" in m for m in r.messages)
    p = r.persons[0]
    assert np.array_equal(p.box, box) and np.allclose(p.centre, [150, 150])
    small = cv2.resize(img, (100, 100), interpolation=cv2.INTER_AREA)
    ref = _estimator().estimate(small, boxes=[[50, 50, 100, 100]]).persons[0]
    assert np.allclose(p.map_to_image, 2 * ref.map_to_image)
    for s, sr in zip(p.stages, ref.stages, strict=True):
        assert np.allclose(s.cnn_maps, sr.cnn_maps, atol=1e-6)
        assert np.allclose(s.joints_2d, 2 * sr.joints_2d)
    # the joints lie inside the box's crop in original pixels
    crop = p.map_to_image @ np.array([[0, 0, 1], [16, 16, 1]]).T
    assert (p.final.joints_2d >= crop[:, 0] - 1e-9).all()
    assert (p.final.joints_2d <= crop[:, 1] + 1e-9).all()
    est.detector = None  # no person detector: the whole image
    whole = est.estimate(img).persons[0]
    assert whole.source == "whole-image" and np.array_equal(whole.box, [0, 0, 200, 200])


def test_no_person_found_is_a_result_not_an_error():
    est = _estimator()
    r = est.estimate(_photo(), boxes=[])
    assert r.persons == [] and r.num_stages == 0 and r.messages
    # PersonNet whose map is flat: no peak anywhere
    cfg = CPMConfig.from_dict({**release_personnet().to_dict(), "input_size": 32,
                               "trunk": [["conv1_1", 3, 4], ["pool", 2, 0]],
                               "stage1": [["c1", 1, 1]], "num_stages": 2, "stage_width": 4,
                               "stage_depth": 1, "stage_hidden": 4, "stage_kernel": 3})
    person = LiftingCPM(cfg)
    for prm in person.parameters():
        torch.nn.init.zeros_(prm)
    est = _estimator(person_model=person)
    r = est.estimate(_photo())
    assert r.persons == [] and "no person found" in r.messages


def test_personnet_centres_drive_the_crops():
    person = _dot_personnet()  # output = input red channel -> peak at the bright dot
    img = np.zeros((64, 96, 3), np.uint8)
    img[30:34, 60:64] = 255
    est = _estimator(person_model=person)
    r = est.estimate(img)
    assert len(r.persons) == 1 and r.persons[0].source == "detector"
    assert np.abs(r.persons[0].centre - [61.5, 31.5]).max() <= 2.5


def _dot_personnet() -> LiftingCPM:
    """A tiny PersonNet whose map is the (normalised) red channel: a peak at a bright dot."""
    cfg = CPMConfig.from_dict({**release_personnet().to_dict(), "input_size": 32,
                               "trunk": [["conv1_1", 1, 1], ["pool", 2, 0]],
                               "stage1": [["c1", 1, 1]], "num_stages": 1})
    person = LiftingCPM(cfg)
    with torch.no_grad():
        person.layers["conv1_1"].weight.zero_()
        person.layers["conv1_1"].weight[0, 0] = 1.0
        person.layers["conv1_1"].bias.fill_(0.5)
        person.layers["c1"].weight.fill_(1.0)
        person.layers["c1"].bias.zero_()
    return person


def test_estimate_command_person_weights_and_bf16(tmp_path, monkeypatch):
    """``poseviewer estimate --person-weights PATH --bf16`` loads PersonNet and runs bf16
    (as on a CPU with native bfloat16: this machine's may have none, which the CLI would
    answer with float32; that case is test_cli_bad_input's)."""
    import json

    from poseviewer.cli import main

    monkeypatch.setattr(estimator_mod, "native_bf16", lambda device: True)
    torch.manual_seed(0)
    weights = save_cpm(LiftingCPM(tiny_test(fusion=False)), tmp_path / "tiny.safetensors")
    person = save_cpm(_dot_personnet(), tmp_path / "person.safetensors")
    img = np.zeros((64, 96, 3), np.uint8)
    img[30:34, 60:64] = 255
    cv2.imwrite(str(tmp_path / "dot.png"), img)
    mat = require_shared("reference", "lftd", "prob_model_params.mat")
    code = main(["estimate", str(tmp_path / "dot.png"), "--out", str(tmp_path / "out"),
                 "--weights", str(weights), "--model", str(mat), "--person-weights",
                 str(person), "--bf16", "--no-progress"])
    assert code == 0
    doc = json.loads((tmp_path / "out" / "dot.json").read_text())
    assert doc["model"]["bf16"] is True
    assert doc["model"]["person_weights"] == str(person)
    assert doc["model"]["person_network"] == "release-personnet"
    assert [p["source"] for p in doc["persons"]] == ["detector"]


def test_stage_callback_sequence_and_cancel():
    est = _estimator()
    calls = []
    est.estimate(_photo(), boxes=[[0, 0, 50, 50], [10, 10, 80, 110]],
                 on_stage=lambda t, n: calls.append((t, n)))
    assert calls == [(t, 3) for t in range(3)]  # once per stage, for both people at once
    token = CancelToken()

    def stop(t, n):
        token.cancel()

    with pytest.raises(Cancelled):
        est.estimate(_photo(), on_stage=stop, cancel=token)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        est.estimate(_photo(), cancel=token)


def test_bad_and_missing_weights(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="CNN weights not found"):
        Estimator.load(tmp_path / "none.safetensors", pose_model=None)
    monkeypatch.setattr(estimator_mod, "DEFAULT_CNN", tmp_path / "cpm_default.safetensors")
    with pytest.raises(ModelNotFoundError, match="default model not found"):
        Estimator.default()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError):
        Estimator.load(bad)
    good = save_cpm(LiftingCPM(tiny_test()), tmp_path / "w.safetensors")
    monkeypatch.setattr(estimator_mod, "DEFAULT_POSE_MODEL", tmp_path / "pose3d.safetensors")
    with pytest.raises(ModelNotFoundError, match="default 3D model not found"):
        Estimator.load(good)
    with pytest.raises(ModelNotFoundError, match="3D pose model not found"):
        Estimator.load(good, pose_model=tmp_path / "missing.mat")


def test_bf16_autocast_runs_and_stays_close(monkeypatch):
    """As on a CPU with native bfloat16 (without it the Estimator runs float32 instead)."""
    monkeypatch.setattr(estimator_mod, "native_bf16", lambda device: True)
    est = _estimator()
    img = _photo()
    a = est.estimate(img).persons[0].final.cnn_maps
    est.bf16 = True
    b = est.estimate(img).persons[0].final.cnn_maps
    assert b.dtype == np.float32
    assert not np.array_equal(a, b)  # bf16 really ran (it rounds)
    assert np.abs(a - b).max() < 0.05 * max(np.abs(a).max(), 1e-3)
    assert est.estimate(img).model["bf16"] is True


def test_release_reading_of_joints():
    """joint_reading='release': the whole image is resized to height S (cubic, fx = fy), the
    crop is centred on the resized image's centre, maps are legacy-resized to the crop and
    the joints are (argmax + centre - S/2) / scale, rounded."""
    from poseviewer.cnn.ops import legacy_resize

    cfg = CPMConfig.from_dict({**tiny_test(fusion=False).to_dict(), "box_fill": 1.0,
                               "joint_reading": "release"})
    torch.manual_seed(1)
    est = Estimator(LiftingCPM(cfg), device="cpu")
    img = _photo(100, 150)
    r = est.estimate(img)
    p = r.persons[0]
    s = 64 / 100
    xc, yc = round(150 * s / 2), round(100 * s / 2)
    for st in p.stages:
        up = legacy_resize(torch.from_numpy(st.cnn_maps)[None], (64, 64))[0].numpy()
        idx = up.reshape(14, -1).argmax(1)
        x, y = idx % 64, idx // 64
        expect = np.stack([np.round((x + xc - 32) / s), np.round((y + yc - 32) / s)], -1)
        assert np.array_equal(st.joints_2d, expect)
        assert np.allclose(st.confidence, up.mean(1).max(1), rtol=1e-5)
        assert np.array_equal(st.visible, st.confidence > 1e-3)
    # the crop the network saw is the release's: cubic resize with fx = fy, pad, crop
    resized = cv2.resize(img, (0, 0), fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
    norm = (resized.astype(np.float64) / 255 - 0.5).astype(np.float32)
    padded = np.pad(norm, ((32, 32), (32, 32), (0, 0)))
    crop = padded[yc:yc + 64, xc:xc + 64]
    with torch.no_grad():
        ref = est.model(torch.from_numpy(crop).permute(2, 0, 1)[None]).final.cnn[0, :14]
    assert np.allclose(p.final.cnn_maps, ref.numpy(), atol=1e-5)


# ---- with the real 3D model ---------------------------------------------------------------
@pytest.fixture(scope="module")
def pose_model():
    from poseviewer.lifting import PoseModel3D

    return PoseModel3D.from_mat(require_shared("reference", "lftd", "prob_model_params.mat"))


def _all_visible(cfg: CPMConfig) -> CPMConfig:
    return CPMConfig.from_dict({**cfg.to_dict(), "visibility_threshold": -1e9})


def test_estimate_with_per_stage_lifting_and_fusion(pose_model):
    torch.manual_seed(3)
    # report the joints the stage lifted (with the default "fused" the joints are re-read
    # from the fused maps and need not be the lifted ones)
    cfg = CPMConfig.from_dict({**_all_visible(tiny_test(fusion=True)).to_dict(),
                               "report_joints": "cnn"})
    est = Estimator(LiftingCPM(cfg), pose_model, device="cpu")
    r = est.estimate(_photo(), boxes=[[10, 20, 70, 110]])
    p = r.persons[0]
    m = p.map_to_image
    assert r.model["fusion_active"] and r.timings["lift"] > 0
    # every phase is timed, under the documented keys
    from poseviewer.result import TIMINGS

    assert set(r.timings) == set(TIMINGS)
    assert r.timings["total"] >= r.timings["cnn"] + r.timings["fusion"] + r.timings["lift"]
    for s in p.stages:
        fit = s.fit
        assert len(fit) == 1 and bool(fit.lifted[0])
        assert isinstance(fit.joints_2d, np.ndarray)
        # every component's projection is in image pixels too; the best one is joints_2d
        k = int(fit.component[0])
        assert np.allclose(fit.components.joints_2d[0, k], fit.joints_2d[0])
        # lifting the stage's image-pixel joints along their ray gives the same fit (the
        # in-network lifting goes map grid -> image -> virtual camera and back)
        direct = lift_along_rays(pose_model, s.joints_2d[None], s.visible[None],
                                 r.image_size, est.fov)
        assert np.allclose(direct.pose_3d, fit.pose_3d, atol=1e-6)
        assert np.allclose(direct.joints_2d, fit.joints_2d, atol=1e-6)
        # the projected maps peak at the fit's projection (nearest map pixel)
        proj_img = fit.joints_2d[0, CPM_TO_H36M_SLOTS]  # CPM joints CPM_TO_H36M_SOURCES
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        proj_map = proj_img @ inv[:, :2].T + inv[:, 2]
        for jj, j in enumerate(CPM_TO_H36M_SOURCES):
            x, y = proj_map[jj]
            if 0.5 < x < 14.5 and 0.5 < y < 14.5:
                yy, xx = np.unravel_index(s.projected_maps[j].argmax(), (16, 16))
                assert (xx, yy) == (round(x), round(y))
        # fused = w * cnn + (1 - w) * projected with the initial w = 0.5
        assert np.allclose(s.fused_maps, 0.5 * s.cnn_maps + 0.5 * s.projected_maps, atol=1e-6)


def test_release_reading_with_fusion_lifts_the_reported_joints(pose_model, monkeypatch):
    """joint_reading='release' + fusion: the in-network lift (fit, projected maps) uses the
    joints and visibility the result reports (the release reading: confidence on the maps
    resized to the crop), not the map-grid reading."""
    base = {**tiny_test(fusion=True).to_dict(), "box_fill": 1.0, "joint_reading": "release",
            "report_joints": "cnn"}  # the lifted joints (not re-read from the fused maps)
    img = _photo(64, 90, seed=3)  # height 64 = crop: scale 1, integral release centre

    def run(threshold, fov=None):
        torch.manual_seed(5)
        cfg = CPMConfig.from_dict({**base, "visibility_threshold": threshold})
        return Estimator(LiftingCPM(cfg), pose_model, device="cpu", fov=fov,
                         detector=None).estimate(img).persons[0]

    # a threshold between a joint's release and grid confidences, with >= 5 joints visible
    s0 = run(-1e9).stages[0]
    rel, grid = s0.confidence, s0.cnn_maps.mean(1).max(1)
    cands = [t for t in (rel + grid) / 2 if (rel > t).sum() >= 5 and (rel > t).sum() < 14
             and not np.array_equal(rel > t, grid > t)]
    assert cands
    thr = float(cands[0])
    p = run(thr, fov=0)  # orthographic: the joints lifted as they are
    assert p.source == "whole-image" and bool(p.stages[0].fit.lifted[0])
    grid_differs = False
    for s in p.stages:
        assert np.array_equal(s.visible, s.confidence > thr)
        grid_conf = s.cnn_maps.mean(1).max(1)  # what the map-grid reading would use
        grid_differs |= not np.array_equal(grid_conf > thr, s.visible)
        if bool(s.fit.lifted[0]):
            direct = pose_model.lift(torch.from_numpy(s.joints_2d[None]),
                                     torch.from_numpy(s.visible[None]))
            assert np.allclose(direct.pose_3d, s.fit.pose_3d, atol=1e-6)
            assert np.allclose(direct.joints_2d, s.fit.joints_2d, atol=1e-6)
    assert grid_differs  # the grid reading would have lifted other joints


def test_post_hoc_lifting_when_the_network_does_not_fuse(pose_model):
    torch.manual_seed(4)
    est = Estimator(LiftingCPM(_all_visible(tiny_test(fusion=False))), pose_model,
                    device="cpu")
    boxes = [[0, 0, 60, 100], [30, 10, 90, 120]]
    r = est.estimate(_photo(), boxes=boxes)
    est.fov = 0  # orthographic: the joints as they are
    r0 = est.estimate(_photo(), boxes=boxes)
    for p, p0 in zip(r.persons, r0.persons, strict=True):
        for s, s0 in zip(p.stages, p0.stages, strict=True):
            assert s.projected_maps is None and np.array_equal(s.fused_maps, s.cnn_maps)
            direct = lift_along_rays(pose_model, s.joints_2d[None], s.visible[None],
                                     r.image_size, DEFAULT_FOV_DEG)
            assert np.allclose(direct.pose_3d, s.fit.pose_3d)
            assert np.allclose(direct.joints_2d, s.fit.joints_2d)
            plain = pose_model.lift(torch.from_numpy(s0.joints_2d[None]),
                                    torch.from_numpy(s0.visible[None]))
            assert np.allclose(plain.pose_3d, s0.fit.pose_3d)
            assert np.allclose(plain.joints_2d, s0.fit.joints_2d)
            # off the image centre the ray moves the fit, but not far
            assert not np.allclose(s.fit.pose_3d, s0.fit.pose_3d)
    assert np.isfinite(r.persons[1].pose_3d).all()

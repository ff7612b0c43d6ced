"""int8 stage convolutions (``poseviewer.cnn.int8``): the calibration file's round trip,
the shipped calibration on a real photo against float32, and clear errors for missing,
damaged or mismatched files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from poseviewer.cnn import LiftingCPM, tiny_test
from poseviewer.cnn.int8 import (
    ACT_RANGE,
    Int8Error,
    Int8Parts,
    attach_int8,
    calibration_path,
    load_int8,
    save_calibration,
)
from poseviewer.paths import DEFAULT_CNN, RESOURCES

SHIPPED = calibration_path(DEFAULT_CNN)


def _tiny(seed: int = 0) -> LiftingCPM:
    torch.manual_seed(seed)
    return LiftingCPM(tiny_test(fusion=False)).eval()


def _calibrated(model: LiftingCPM, tmp_path: Path) -> tuple[Int8Parts, Path]:
    parts = Int8Parts(model)
    attach_int8(model, parts)
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for _ in range(4):
            model(torch.rand(4, 3, 64, 64, generator=gen) - 0.5, read_joints=False)
    attach_int8(model, None)
    path = save_calibration(parts, tmp_path / "tiny.int8.safetensors", {"images": 16})
    return parts, path


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Int8Parts, Path]:
    """The tiny network (seed 0) calibrated on random crops, and its file."""
    return _calibrated(_tiny(), tmp_path_factory.mktemp("int8"))


def test_calibration_round_trip_reproduces_the_scales(calibrated: tuple[Int8Parts, Path]
                                                      ) -> None:
    model = _tiny()
    parts, path = calibrated
    expected = {}
    for key, obs in parts._observers().items():
        scale, zp = obs.calculate_qparams()
        expected[key] = (float(scale), int(zp))
    loaded = load_int8(model, path)
    assert loaded.converted and not loaded.quantises_trunk
    # each head's input quantisation uses the calibrated scale and zero point
    got = []
    for t, head in enumerate(loaded.heads):
        for name, buf in head.named_buffers():
            if name.endswith("input_scale_0"):
                zp = getattr(head, name.replace("scale", "zero_point"))
                got.append((f"head{t}", float(buf), int(zp)))
    assert got
    for part, scale, zp in got:
        matches = [v for k, v in expected.items() if k.startswith(part + ".")]
        assert any(abs(s - scale) <= 1e-6 * s and z == zp for s, z in matches)
        assert ACT_RANGE[0] <= zp <= ACT_RANGE[1]


def test_int8_heads_follow_the_float_network(calibrated: tuple[Int8Parts, Path]) -> None:
    model = _tiny()
    _, path = calibrated
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5)) - 0.5
    with torch.inference_mode():
        ref = [s.cnn for s in model(x, read_joints=False).stages]
        attach_int8(model, load_int8(model, path))
        assert model.int8 is not None
        q = [s.cnn for s in model(x, read_joints=False).stages]
        attach_int8(model, None)
        again = [s.cnn for s in model(x, read_joints=False).stages]
    for a, b, c in zip(ref, q, again, strict=True):
        assert torch.equal(a, c)  # detaching gives float32 back exactly
        err = (a - b).abs().mean() / a.abs().mean()
        assert 0 < err < 0.05, err  # quantised (not identical), close (8-bit activations)


def test_missing_damaged_and_foreign_files(tmp_path: Path,
                                           calibrated: tuple[Int8Parts, Path]) -> None:
    model = _tiny()
    with pytest.raises(Int8Error, match="not found"):
        load_int8(model, tmp_path / "none.int8.safetensors")
    bad = tmp_path / "bad.int8.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(Int8Error, match="cannot read"):
        load_int8(model, bad)
    _, path = calibrated
    with pytest.raises(Int8Error, match="other weights"):
        load_int8(_tiny(seed=1), path)  # calibrated for seed 0's weights
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other.safetensors"
    save_file(load_file(str(path)), str(other), metadata={"format": "something-else"})
    with pytest.raises(Int8Error, match="not an int8 calibration"):
        load_int8(model, other)


def test_estimator_precision_option_and_messages(tmp_path: Path,
                                                calibrated: tuple[Int8Parts, Path]) -> None:
    from poseviewer.estimator import Estimator

    est = Estimator(_tiny(), None, device="cpu", detector=None,  # seed 0: calibrated's
                    info={"int8_file": str(tmp_path / "missing.int8.safetensors")})
    assert est.precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        est.precision = "int4"
    with pytest.raises(Int8Error, match="not found"):
        est.precision = "int8"
    assert est.precision == "fp32"
    est.info["int8_file"] = str(calibrated[1])
    est.precision = "int8"
    assert est.precision == "int8" and est.model.int8 is not None
    est.precision = "fp32"
    assert est.model.int8 is None


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped int8 calibration")
def test_shipped_calibration_on_a_real_photo() -> None:
    """The bundled network with the shipped calibration: the photo's maps and joints agree
    with float32 (tolerances: mean |b_int8 - b_fp32| < 0.01 and max < 0.25 on the final
    stage's belief maps (0..1), the visible joints within one map pixel)."""
    from poseviewer.estimator import Estimator

    meta = json.loads(json.dumps(_metadata(SHIPPED)))
    assert meta["format"] == "poseviewer-cpm-int8-1"
    est = Estimator.default(device="cpu", flip_test=False)
    photo = str(RESOURCES / "sample_fullbody.jpg")
    ref = est.estimate(photo)
    est.precision = "int8"
    assert est.precision == "int8"
    got = est.estimate(photo)
    assert got.model["precision"] == "int8" and ref.model["precision"] == "fp32"
    assert len(got.persons) == len(ref.persons) == 1
    a, b = ref.persons[0].final, got.persons[0].final
    diff = np.abs(np.asarray(a.cnn_maps) - np.asarray(b.cnn_maps))
    assert 0 < diff.mean() < 0.01 and diff.max() < 0.25, (diff.mean(), diff.max())
    vis = np.asarray(a.visible, bool) & np.asarray(b.visible, bool)
    assert vis.sum() >= 10
    dist = np.linalg.norm(np.asarray(a.joints_2d) - np.asarray(b.joints_2d), axis=-1)[vis]
    m = np.asarray(ref.persons[0].map_to_image)
    map_px = float(np.hypot(m[0, 0], m[1, 0]))  # one map pixel in image pixels
    assert np.all(dist <= map_px), (dist, map_px)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def test_commands_say_when_the_calibration_is_missing(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """``--precision int8`` with weights that have no calibration beside them: exit 2 and
    a message naming the missing file (estimate and eval-2d)."""
    import cv2

    from poseviewer.cli import main
    from poseviewer.cnn import save_cpm

    weights = save_cpm(_tiny(), tmp_path / "tiny.safetensors")
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((64, 48, 3), 90, np.uint8))
    assert main(["estimate", str(photo), "--out", str(tmp_path / "out"), "--weights",
                 str(weights), "--precision", "int8", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "int8 calibration not found" in err and "tiny.int8.safetensors" in err
    assert not (tmp_path / "out").exists()
    assert main(["eval-2d", "--weights", str(weights), "--precision", "int8"]) == 2
    assert "int8 calibration not found" in capsys.readouterr().err


def test_optional_int8_trunk_of_the_default_network() -> None:
    """``trunk=True`` (not shipped): the MobileNet trunk quantised too, its strided 'SAME'
    convs (explicit pads) kept float32; calibrated and checked on the same kind of input
    (random crops), the features follow the float ones."""
    from poseviewer.cnn import load_cpm

    model = load_cpm(DEFAULT_CNN).eval()
    model.set_flip_test(False)
    parts = Int8Parts(model, trunk=True)
    attach_int8(model, parts)
    gen = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        model(torch.rand(2, 3, 192, 192, generator=gen) - 0.5, read_joints=False)
        attach_int8(model, None)
        parts.convert()
        x = torch.rand(2, 3, 192, 192, generator=gen) - 0.5
        ref = model.trunk(x)
        attach_int8(model, parts)
        got = model.trunk(x)
        attach_int8(model, None)
    assert parts.quantises_trunk and parts.relu6
    strided = {f"layers.{name}" for name, _, _, op in parts.trunk_plan if "pad" in op}
    kinds = {name: type(m).__module__ for name, m in parts.trunk.named_modules()
             if name.startswith("layers.") and name.count(".") == 1}
    assert len(strided) == 5 and all(kinds[n] == "torch.nn.modules.conv" for n in strided)
    assert sum("quantized" in k for k in kinds.values()) == len(kinds) - len(strided)
    err = float((got - ref).abs().mean() / ref.abs().mean())
    assert 0 < err < 0.25, err

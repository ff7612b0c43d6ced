"""People finders: NMS and box maths by hand; the MoveNet MultiPose detector against TF.js's
own output, its conversion round trip on a graph the test writes, real photos (heads and
feet placed by hand); the HOG detector on a synthetic silhouette."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import require_shared

from poseviewer.detect import (
    DEFAULT_DETECTOR,
    DetectorError,
    PersonDetector,
    decode_multipose,
    enlarge_box,
    find_people,
    letterbox,
    load_detector,
    nms,
)
from poseviewer.imageio import ImageError
from poseviewer.paths import RESOURCES

FIXTURES = Path(__file__).parent / "fixtures"


def test_nms_hand_case() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 8, 8],
                      [0, 0, 10, 10.5]], dtype=float)
    scores = np.array([0.9, 0.95, 0.5, 0.3, 0.1])
    # box 1 (best) suppresses box 0 (IoU 81/119 = 0.68) and box 4; box 3 lies inside box 1
    # (contained fraction 1.0); box 2 is disjoint.
    assert nms(boxes, scores).tolist() == [1, 2]
    assert nms(boxes, scores, iou_threshold=0.7, contain_threshold=1.1).tolist() == [1, 0, 2, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []
    with pytest.raises(ValueError, match="scores"):
        nms(boxes, scores[:2])


def test_enlarge_box_scales_about_centre_and_clips() -> None:
    np.testing.assert_allclose(enlarge_box(np.array([10, 20, 30, 60]), 100, 100, 1.5, 2.0),
                               [5, 0, 35, 80])
    np.testing.assert_allclose(enlarge_box(np.array([80, 10, 100, 30]), 95, 100, 2.0, 1.0),
                               [70, 10, 95, 30])


def test_letterbox_maps_pixels_as_it_says() -> None:
    img = np.zeros((100, 300, 3), np.uint8)
    img[40:60, 200:220] = 255  # a white block at x 200..220, y 40..60
    sq, s, ox, oy = letterbox(img, 150)
    assert sq.shape == (150, 150, 3) and s == pytest.approx(0.5)
    assert (ox, oy) == (0.0, 50.0)  # 300 x 100 -> 150 x 50, centred vertically
    ys, xs = np.nonzero(sq[..., 0] > 128)
    assert (xs.min(), xs.max() + 1) == (100, 110)  # 200 * 0.5 + 0 .. 220 * 0.5
    assert (ys.min(), ys.max() + 1) == (70, 80)  # 40 * 0.5 + 50 .. 60 * 0.5 + 50
    assert sq[:50].max() == 0 and sq[100:].max() == 0  # black bands


def test_bad_input_is_named() -> None:
    with pytest.raises(ImageError, match="shape"):
        find_people(np.zeros((100, 100, 5), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        find_people(np.zeros((5, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown person detector 'yolo'"):
        find_people(np.zeros((100, 100, 3), np.uint8), method="yolo")


@pytest.mark.parametrize("method", ["movenet", "hog"])
def test_flat_images_have_nobody(method: str) -> None:
    for img in (np.full((300, 200, 3), 200, np.uint8), np.zeros((90, 640), np.uint8)):
        boxes, scores = find_people(img, method=method)
        assert boxes.shape == (0, 4) and scores.shape == (0,)


# ---- MoveNet MultiPose -------------------------------------------------------------------
def test_shipped_detector_reproduces_tfjs() -> None:
    """The shipped weights + our decoding vs TF.js 4.22 running the package's graph on the
    letterboxed dancers photo (scripts/check_detector_reference.py wrote the fixture)."""
    ref = np.load(FIXTURES / "detector_tfjs_dancers.npz", allow_pickle=False)
    det = load_detector()
    maps = det.maps(ref["input"])
    centre = ref["center"]
    assert np.abs(maps["center"][0] - centre).max() < 1e-4 * np.abs(centre).max()
    dec = decode_multipose(maps, max_people=6)
    out = ref["output"]  # (6, 56): 17 x (y, x, score), ymin, xmin, ymax, xmax, score
    n = len(dec["scores"])
    assert n == 6
    np.testing.assert_allclose(dec["boxes"] / 64.0, out[:, 51:55], atol=1e-3)
    np.testing.assert_allclose(dec["keypoints"] / 64.0, out[:, :51].reshape(6, 17, 3)[..., :2],
                               atol=1e-3)
    np.testing.assert_allclose(dec["keypoint_scores"], out[:, :51].reshape(6, 17, 3)[..., 2],
                               atol=1e-3)
    np.testing.assert_allclose(dec["scores"], out[:, 55], atol=1e-3)
    assert (out[:3, 55] > 0.4).all() and (out[3:, 55] < 0.05).all()  # three dancers


def _b64(s: str) -> str:
    import base64

    return base64.b64encode(s.encode()).decode()


def write_fake_multipose(folder: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A tarball with a tiny graph named like MoveNet MultiPose: int pixels -> x/127.5 - 1
    -> 3x3/4 conv + relu (the 'FPN' node) -> six 1x1 heads."""
    from poseviewer.tfjs.detector import HEADS, MEMBER, SOURCE

    rng = np.random.default_rng(3)
    chans = {"center": 1, "box_scale": 2, "box_offset": 2, "kpt_regress": 34,
             "kpt_heatmap": 17, "kpt_offset": 34}
    w = {"trunk_w": rng.normal(0, 0.3, (3, 3, 3, 6)).astype(np.float16).astype(np.float32),
         "trunk_b": rng.normal(0, 0.1, 6).astype(np.float32)}
    for k, c in chans.items():
        w[k + "_w"] = rng.normal(0, 0.5, (1, 1, 6, c)).astype(np.float32)
        w[k + "_b"] = rng.normal(0, 0.2, c).astype(np.float32)
    p = "StatefulPartitionedCall/"
    consts = [(p + "truediv", np.array(1 / 127.5, np.float32)),
              (p + "sub_1/y", np.array(1.0, np.float32)),
              (p + "m/trunk/Conv2D_weights", w["trunk_w"]), (p + "m/trunk/Conv2D_bn_offset",
                                                             w["trunk_b"])]
    for k in chans:
        consts += [(f"{p}{k}_0/conv/Conv2D_weights", w[k + "_w"]),
                   (f"{p}{k}_0/conv/Conv2D_bn_offset", w[k + "_b"])]
    specs, blob = [], b""
    for name, arr in consts:
        spec = {"name": name, "shape": list(arr.shape), "dtype": "float32"}
        if name.endswith("trunk/Conv2D_weights"):
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            arr = arr.astype(np.float16)
        specs.append(spec)
        blob += arr.astype(arr.dtype.newbyteorder("<")).tobytes()

    def conv(name, x, wn, stride, act=None):
        fused = ["BiasAdd"] + ([act] if act else [])
        return {"name": name, "op": "_FusedConv2D", "input": [x, wn + "_weights",
                                                              wn + "_bn_offset"],
                "attr": {"strides": {"list": {"i": ["1", str(stride), str(stride), "1"]}},
                         "padding": {"s": _b64("SAME")}, "data_format": {"s": _b64("NHWC")},
                         "dilations": {"list": {"i": ["1", "1", "1", "1"]}},
                         "fused_ops": {"list": {"s": [_b64(f) for f in fused]}}}}

    nodes = [{"name": "input", "op": "Placeholder", "attr": {}},
             {"name": p + "Cast", "op": "Cast", "input": ["input"], "attr": {}},
             {"name": p + "truediv_1", "op": "Mul", "input": [p + "Cast", p + "truediv"],
              "attr": {}},
             {"name": SOURCE.input_node, "op": "Sub", "input": [p + "truediv_1", p + "sub_1/y"],
              "attr": {}}]
    nodes += [{"name": n, "op": "Const", "attr": {}} for n, _ in consts]
    nodes.append(conv(SOURCE.features, SOURCE.input_node, p + "m/trunk/Conv2D", 4, "Relu"))
    for k in chans:
        nodes.append(conv(HEADS[k], SOURCE.features, f"{p}{k}_0/conv/Conv2D", 1))
    model = {"format": "graph-model", "modelTopology": {"node": nodes},
             "weightsManifest": [{"paths": ["movenet-multipose.bin"], "weights": specs}]}
    (folder / "movenet-multipose.json").write_text(json.dumps(model))
    (folder / "movenet-multipose.bin").write_bytes(blob)
    tgz = folder / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        for name in ("movenet-multipose.json", "movenet-multipose.bin"):
            tf.add(folder / name, arcname=str(Path(MEMBER).parent / name))
    return tgz, w


def test_conversion_round_trip_matches_the_graph(tmp_path: Path) -> None:
    """convert-detector on a graph the test writes; the reloaded file's head maps equal a
    numpy run of the graph's ops (TF 'SAME' padding, the graph's own x/127.5 - 1)."""
    from poseviewer.commands.convert_detector import add_arguments, run

    tgz, w = write_fake_multipose(tmp_path)
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "det.safetensors"
    assert run(parser.parse_args([str(tgz), "-o", str(out)])) == 0
    det = PersonDetector.load(out)
    assert det.spec["source"]["member"] == "package/models/movenet-multipose.json"
    assert "Apache-2.0" in det.spec["source"]["licence"]
    px = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    x = px.astype(np.float64) / 127.5 - 1
    # 3x3 stride 4 'SAME' on 32: output 8, padding total max((8-1)*4+3-32, 0) = 0
    feat = np.zeros((8, 8, 6))
    for i in range(8):
        for j in range(8):
            feat[i, j] = np.einsum("hwc,hwco->o", x[4 * i:4 * i + 3, 4 * j:4 * j + 3],
                                   w["trunk_w"]) + w["trunk_b"]
    feat = np.maximum(feat, 0)
    got = det.maps(px)
    for k in ("center", "box_scale", "kpt_regress", "kpt_offset"):
        ref = np.einsum("hwc,co->ohw", feat, w[k + "_w"][0, 0]) + w[k + "_b"][:, None, None]
        np.testing.assert_allclose(got[k], ref, atol=1e-4)


def test_corrupt_or_foreign_weights_are_refused_naming_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(DEFAULT_DETECTOR.read_bytes()[:5000])
    with pytest.raises(DetectorError, match="broken.safetensors"):
        PersonDetector.load(bad)
    with pytest.raises(DetectorError, match="not found: .*missing.safetensors"):
        find_people(np.zeros((64, 64, 3), np.uint8), weights=tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "poseviewer-cpm-1"})
    with pytest.raises(DetectorError, match="other.safetensors is not a poseviewer person"):
        PersonDetector.load(other)


def test_detector_is_loaded_once_per_path() -> None:
    assert load_detector() is load_detector(str(DEFAULT_DETECTOR))


def _inside(box: np.ndarray, pt: tuple[float, float]) -> bool:
    return bool(box[0] <= pt[0] <= box[2] and box[1] <= pt[1] <= box[3])


def _check_boxes(boxes: np.ndarray, scores: np.ndarray, w: int, h: int) -> None:
    assert boxes.shape == (len(scores), 4) and boxes.dtype == np.float64
    assert (np.diff(scores) <= 0).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_three_dancers_each_boxed_head_and_feet() -> None:
    path = require_shared("reference", "lftd", "test_image.png")
    img = cv2.imread(str(path))[..., ::-1]
    boxes, scores = find_people(img)
    _check_boxes(boxes, scores, 1280, 720)
    assert len(boxes) == 3
    # (head, left foot, right foot) of each dancer, read off the image by hand
    dancers = [[(560, 75), (455, 575), (585, 600)],  # left, red top (hair up to y ~20)
               [(790, 170), (675, 535), (765, 550)],  # middle, blue T-shirt
               [(1020, 130), (915, 575), (1085, 585)]]  # right, blue top
    owners = []
    for pts in dancers:
        inside = [i for i, b in enumerate(boxes) if all(_inside(b, p) for p in pts)]
        assert inside, f"no box holds the dancer at {pts[0]}: {boxes.round()}"
        owners.append(inside)
    # one box per dancer: the boxes can be assigned so that each holds a different dancer
    import itertools

    assert any(len(set(c)) == 3 for c in itertools.product(*owners))
    for b in boxes:  # a person, not the whole frame
        assert (b[2] - b[0]) * (b[3] - b[1]) < 0.3 * 1280 * 720


def test_full_body_sample_and_image_kinds() -> None:
    img = cv2.imread(str(RESOURCES / "sample_fullbody.jpg"))[..., ::-1]
    h, w = img.shape[:2]
    boxes, scores = find_people(img)
    _check_boxes(boxes, scores, w, h)
    # head (cap) and both feet, read off the image by hand
    assert all(_inside(boxes[0], p) for p in [(310, 230), (160, 870), (250, 975)])
    # grey, RGBA and 16-bit copies give the same person
    grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    rgba = np.concatenate([img, np.full((h, w, 1), 255, np.uint8)], axis=2)
    for other in (grey, rgba, img.astype(np.uint16) * 257):
        b2, _ = find_people(other)
        assert len(b2) and np.abs(b2[0] - boxes[0]).max() < 0.05 * h


def test_hog_still_available_and_finds_nobody_on_the_portrait() -> None:
    """The former default stays selectable; on the bundled portrait it finds nothing."""
    img = cv2.imread(str(RESOURCES / "sample.jpg"))[..., ::-1]
    boxes, scores = find_people(img, method="hog")
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def silhouette() -> np.ndarray:
    img = np.full((400, 300, 3), 220, np.uint8)
    c = (40, 40, 40)
    cv2.circle(img, (150, 80), 22, c, -1)
    cv2.rectangle(img, (120, 105), (180, 220), c, -1)
    cv2.line(img, (125, 110), (95, 210), c, 16)
    cv2.line(img, (175, 110), (205, 210), c, 16)
    cv2.line(img, (135, 215), (125, 340), c, 22)
    cv2.line(img, (165, 215), (175, 340), c, 22)
    return img


def test_hog_synthetic_silhouette_found_with_head_and_feet() -> None:
    boxes, scores = find_people(silhouette(), method="hog")
    assert len(boxes) == 1
    x0, y0, x1, y1 = boxes[0]
    assert scores[0] >= 0.75
    # the figure spans x 95..205, y 58..340 (head top to feet)
    assert x0 <= 95 and x1 >= 205 and y0 <= 58 and y1 >= 340
    assert (x1 - x0) * (y1 - y0) < 0.9 * 400 * 300

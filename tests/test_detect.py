"""HOG people detector: NMS and box maths by hand, a synthetic silhouette, real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import require_shared

from poseviewer.detect import enlarge_box, find_people, nms
from poseviewer.paths import RESOURCES


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


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="uint8"):
        find_people(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        find_people(np.zeros((100, 100, 5), np.uint8))


def test_blank_image_has_no_people() -> None:
    assert find_people(np.full((300, 200, 3), 200, np.uint8)) == []


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


def test_synthetic_silhouette_found_with_head_and_feet() -> None:
    found = find_people(silhouette())
    assert len(found) == 1
    (x0, y0, x1, y1), score = found[0]
    assert score >= 0.75
    # the figure spans x 95..205, y 58..340 (head top to feet)
    assert x0 <= 95 and x1 >= 205 and y0 <= 58 and y1 >= 340
    assert (x1 - x0) * (y1 - y0) < 0.9 * 400 * 300


def test_sample_photo_background_is_not_a_person() -> None:
    # The bundled upper-body portrait has no full-body pedestrian: no box (the Estimator
    # then uses the whole image); in particular not the flag on the left.
    img = cv2.imread(str(RESOURCES / "sample.jpg"))[..., ::-1]
    assert find_people(img) == []


def test_three_dancers_in_the_release_demo_photo() -> None:
    path = require_shared("reference", "lftd", "test_image.png")
    img = cv2.imread(str(path))[..., ::-1]
    found = find_people(img)
    assert len(found) == 3
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)
    centres = sorted(float((b[0] + b[2]) / 2) for b, _ in found)
    # the dancers stand left, middle and right of the 1280 px wide frame
    assert centres[0] < 600 < centres[1] < 800 < centres[2]
    for b, _ in found:
        assert b[3] - b[1] > 0.5 * img.shape[0]

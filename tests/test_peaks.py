"""Top peaks of belief maps (poseviewer.cnn.peaks), on maps with known peaks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from poseviewer.cnn.ops import read_joints_softmax
from poseviewer.cnn.peaks import top_peaks

# (x, y, height) of well separated Gaussian peaks (sigma 1 map pixel): the log of the map
# is an exact parabola around each, so the sub-grid refinement recovers them exactly.
PEAKS = [(5.3, 7.2, 1.0), (15.0, 4.6, 0.5), (10.2, 15.4, 0.2), (20.4, 16.8, 0.01)]


def _map(peaks: list[tuple[float, float, float]], h: int = 22, w: int = 26) -> torch.Tensor:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    m = sum(a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2) for x, y, a in peaks)
    return torch.from_numpy(m)[None, None]


def test_peaks_found_ordered_refined_and_floored() -> None:
    xy, height = top_peaks(_map(PEAKS), k=4, window=2, floor=0.05)
    assert xy.shape == (1, 1, 4, 2) and height.shape == (1, 1, 4)
    # the first three in order of height, at their true sub-grid positions
    np.testing.assert_allclose(xy[0, 0, :3].numpy(), [p[:2] for p in PEAKS[:3]], atol=1e-9)
    # heights: the grid value at each peak's pixel (nearest pixel of a unit Gaussian)
    for i, (x, y, a) in enumerate(PEAKS[:3]):
        expect = a * math.exp(-((round(x) - x) ** 2 + (round(y) - y) ** 2) / 2)
        assert height[0, 0, i].item() == pytest.approx(expect, rel=1e-9)
    # the fourth is below 0.05 x the maximum: missing
    assert torch.isnan(xy[0, 0, 3]).all() and height[0, 0, 3].item() == 0.0
    # with no floor it is found
    xy0, _ = top_peaks(_map(PEAKS), k=4, floor=0.0)
    np.testing.assert_allclose(xy0[0, 0, 3].numpy(), PEAKS[3][:2], atol=1e-9)


def test_first_peak_is_the_reported_joint() -> None:
    maps = torch.cat([_map(PEAKS), _map(PEAKS[1:3]), _map([(0.0, 3.4, 1.0)])], dim=1)
    xy, _ = top_peaks(maps, k=3)
    joint, _ = read_joints_softmax(maps)
    np.testing.assert_allclose(xy[:, :, 0].numpy(), joint.numpy(), atol=1e-12)
    # a peak on the border is not refined along that axis (x = 0), as the reading
    assert xy[0, 2, 0, 0].item() == 0.0
    # only one peak in the third map: the others are missing
    assert torch.isnan(xy[0, 2, 1:]).all()


def test_window_merges_close_maxima() -> None:
    # two maxima 2 pixels apart: a 5 x 5 window keeps only the higher one
    m = torch.zeros(1, 1, 14, 14, dtype=torch.float64)
    m[0, 0, 6, 6], m[0, 0, 6, 8] = 1.0, 0.9
    xy1, _ = top_peaks(m, k=2, window=1)
    xy2, _ = top_peaks(m, k=2, window=2)
    np.testing.assert_allclose(xy1[0, 0].numpy(), [[6, 6], [8, 6]])
    assert torch.isnan(xy2[0, 0, 1]).all()


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="expects"):
        top_peaks(torch.zeros(3, 4, 5))

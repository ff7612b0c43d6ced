"""A belief map's top peaks (not only its argmax): what the fusion could choose between.

``top_peaks`` finds the local maxima of each joint map (the largest value in a
(2 window + 1)^2 square), keeps those at least ``floor`` x the map's maximum, orders them
by height and refines each below the grid as ``ops.read_joints_softmax`` refines the
argmax (a parabola through the log values of its two neighbours along x and along y,
clamped to half a map pixel; none on the border). The first peak is therefore the joint
the network reports. Coordinates are on the map grid (x = column, y = row).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from poseviewer.cnn.ops import refine_peaks


def top_peaks(maps: Tensor, k: int = 3, window: int = 2, floor: float = 0.05
              ) -> tuple[Tensor, Tensor]:
    """(B, J, h, w) positive maps -> (xy (B, J, k, 2) map-grid positions, height (B, J, k)),
    highest first; missing peaks (fewer than k local maxima above ``floor`` x the map's
    maximum) are NaN with height 0."""
    if maps.ndim != 4:
        raise ValueError(f"top_peaks expects (B, J, h, w) maps, got {tuple(maps.shape)}")
    if k < 1 or window < 0:
        raise ValueError("need k >= 1 and window >= 0")
    B, J, h, w = maps.shape
    m = maps.double().clamp_min(0)
    pooled = F.max_pool2d(m.reshape(B * J, 1, h, w), 2 * window + 1, stride=1,
                          padding=window).reshape(B, J, h, w)
    top = m.amax((-2, -1), keepdim=True)
    peak = (m == pooled) & (m >= floor * top) & (top > 0)
    score = torch.where(peak, m, torch.full_like(m, -1.0)).flatten(2)
    kk = min(k, h * w)
    height, idx = score.topk(kk, dim=-1)  # (B, J, kk), sorted
    iy, ix = idx // w, idx % w
    xy = refine_peaks(m, iy, ix)
    found = height > 0
    xy = torch.where(found[..., None], xy, torch.full_like(xy, float("nan")))
    height = torch.where(found, height, torch.zeros_like(height))
    if kk < k:
        xy = torch.cat([xy, xy.new_full((B, J, k - kk, 2), float("nan"))], dim=2)
        height = torch.cat([height, height.new_zeros((B, J, k - kk))], dim=2)
    return xy, height

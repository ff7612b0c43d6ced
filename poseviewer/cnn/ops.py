"""Small tensor operations shared by the networks: the TF-1 legacy bilinear resize, 'SAME'
average pooling, the centre map, Gaussian belief maps and reading joints from maps.

Map-grid convention (used everywhere in ``poseviewer.cnn``): map pixel (i, j) has
coordinates x = j, y = i, and a crop pixel p lies at map coordinate p / stride. This is the
convention of the release's legacy resize (source = destination * in / out).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _legacy_axis(n_in: int, n_out: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Lower index, upper index and float32 lerp weight along one axis (TF-1 legacy)."""
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)  # TF computes in/out in float32
    src = torch.arange(n_out, dtype=torch.float32) * scale
    lo_f = torch.floor(src)
    lo = lo_f.to(torch.int64).clamp(0, n_in - 1)
    hi = torch.ceil(src).to(torch.int64).clamp(max=n_in - 1)
    w = src - lo_f
    return lo.to(device), hi.to(device), w.to(device)


def legacy_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize (..., H, W) -> (..., h, w) exactly as TensorFlow 1's
    ``resize_bilinear(align_corners=False)`` without half-pixel centres.

    Source coordinate = destination * (in / out) in float32; value = a + (b - a) * w, first
    along x, then along y (float32 arithmetic for float32 inputs).
    """
    out_h, out_w = int(size[0]), int(size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"legacy_resize: output size must be positive, got {size}")
    in_h, in_w = x.shape[-2], x.shape[-1]
    y0, y1, wy = _legacy_axis(in_h, out_h, x.device)
    x0, x1, wx = _legacy_axis(in_w, out_w, x.device)
    wx = wx.to(x.dtype)
    wy = wy.to(x.dtype)
    left = x.index_select(-1, x0)
    right = x.index_select(-1, x1)
    cols = left + (right - left) * wx  # (..., H, w)
    top = cols.index_select(-2, y0)
    bottom = cols.index_select(-2, y1)
    return top + (bottom - top) * wy[:, None]


def avg_pool_same(x: Tensor, kernel: int, stride: int) -> Tensor:
    """Average pooling with TensorFlow's 'SAME' padding: padded cells are not counted.

    Output size ceil(n / stride); the padding total max((out - 1) * stride + kernel - n, 0)
    is split with the smaller half before (TF's rule).
    """
    h, w = x.shape[-2], x.shape[-1]
    pads = []
    for n in (w, h):
        out = -(-n // stride)
        total = max((out - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    summed = F.avg_pool2d(F.pad(x, pads), kernel, stride, divisor_override=1)
    ones = torch.ones((1, 1, h, w), dtype=x.dtype, device=x.device)
    count = F.avg_pool2d(F.pad(ones, pads), kernel, stride, divisor_override=1)
    return summed / count


def centre_map(size: int, sigma: float, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Tensor:
    """(1, 1, S, S) release centre map exp(-((x - c)^2 + (y - c)^2) / sigma^2), c = S / 2."""
    c = size / 2.0
    r = torch.arange(size, dtype=torch.float64) - c
    d2 = r[None, :] ** 2 + r[:, None] ** 2
    return torch.exp(-d2 / sigma**2).to(dtype=dtype, device=device)[None, None]


def gaussian_maps(points: Tensor, height: int, width: int, sigma: float) -> Tensor:
    """(B, J, 2) xy in map coordinates -> (B, J, height, width) maps exp(-d^2 / (2 sigma^2)).

    Peak value 1 at the point (exactly, when the point is on a pixel); NaN points give 0.
    """
    dtype = points.dtype if points.dtype.is_floating_point else torch.float32
    xs = torch.arange(width, dtype=dtype, device=points.device)
    ys = torch.arange(height, dtype=dtype, device=points.device)
    px = points[..., 0:1].to(dtype)
    py = points[..., 1:2].to(dtype)
    gx = torch.exp(-((xs - px) ** 2) / (2 * sigma**2))  # (B, J, W)
    gy = torch.exp(-((ys - py) ** 2) / (2 * sigma**2))  # (B, J, H)
    maps = gy[..., :, None] * gx[..., None, :]
    return torch.nan_to_num(maps, nan=0.0)


def argmax_xy(maps: Tensor) -> Tensor:
    """(B, J, H, W) -> (B, J, 2) int64 xy of each map's first maximum in row-major order."""
    w = maps.shape[-1]
    idx = maps.flatten(-2).argmax(-1)
    return torch.stack([idx % w, idx // w], dim=-1)


def column_mean_confidence(maps: Tensor) -> Tensor:
    """The release's confidence: max over columns x of (mean over rows y). (B, J)."""
    return maps.mean(dim=-2).amax(dim=-1)


def read_joints_grid(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Joints on the map grid: (B, J, 2) float xy by argmax, and (B, J) confidence.

    The confidence uses the release formula on the map grid itself (its value is close to
    the release's, which applies the same formula after resizing to the crop).
    """
    return argmax_xy(maps).to(maps.dtype), column_mean_confidence(maps)


def read_joints_release(maps: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The release's reading: legacy-resize (B, J, h, w) to (size, size), integer argmax
    (x = index % size, y = index // size) and column-mean confidence. Crop pixel xy, conf."""
    up = legacy_resize(maps, (size, size))
    return argmax_xy(up), column_mean_confidence(up)


def logit(p: float) -> float:
    """log(p / (1 - p)) with a clear error outside (0, 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"fusion initial weight must be in (0, 1), got {p}")
    return math.log(p / (1.0 - p))


def refine_peaks(m: Tensor, iy: Tensor, ix: Tensor) -> Tensor:
    """Map-grid xy (B, J, K, 2) of the grid peaks at rows ``iy`` and columns ``ix`` (B, J, K)
    of positive maps ``m`` (B, J, h, w): each refined by a parabola through the log values of
    its two neighbours along x and along y (exact for a sampled Gaussian peak), clamped to
    half a map pixel; no refinement on the map border."""
    w = m.shape[-1]
    flat = F.pad(m.clamp_min(1e-30).log(), (1, 1, 1, 1), value=float("nan")).flatten(2)
    w2 = w + 2

    def at(dy: int, dx: int) -> Tensor:
        return flat.gather(-1, (iy + 1 + dy) * w2 + ix + 1 + dx)

    c = at(0, 0)
    out = []
    for lo, hi in ((at(0, -1), at(0, 1)), (at(-1, 0), at(1, 0))):
        den = lo - 2 * c + hi
        off = 0.5 * (lo - hi) / den
        ok = torch.isfinite(off) & (den < 0)
        out.append(torch.where(ok, off, torch.zeros_like(off)).clamp(-0.5, 0.5))
    return torch.stack([ix.to(m.dtype) + out[0], iy.to(m.dtype) + out[1]], dim=-1)


def read_joints_softmax(maps: Tensor, window: int = 1) -> tuple[Tensor, Tensor]:
    """Sub-grid joints and peak mass from positive belief maps (B, J, h, w).

    Position: the argmax refined by a parabola through the log values of its two
    neighbours along x and along y (exact for a sampled Gaussian peak), clamped to half a
    map pixel; no refinement on the map border. Confidence: the fraction of the map's total
    (the map normalised to sum 1) inside the (2 window + 1)^2 square around the argmax,
    i.e. how much of the belief sits at the reported joint. Returns map-grid xy (B, J, 2)
    and confidence (B, J).
    """
    B, J, h, w = maps.shape
    m = (maps if maps.dtype == torch.float64 else maps.float()).clamp_min(0)
    total = m.sum((-2, -1)).clamp_min(1e-30)
    idx = m.flatten(2).argmax(-1)
    iy, ix = idx // w, idx % w
    xy = refine_peaks(m, iy[..., None], ix[..., None])[..., 0, :]
    k = 2 * window + 1
    box = F.avg_pool2d(F.pad(m, (window,) * 4), k, stride=1) * (k * k)
    mass = box.flatten(2).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
    return xy.to(maps.dtype), (mass / total).to(maps.dtype)

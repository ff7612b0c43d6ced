"""One affine warp per sample from the crop cache to the network input.

The warp composes: move the person's centre (the cache centre) to the origin, optional
horizontal flip, scale (the base scale maps a ``box`` x person-extent square onto the
input), rotation, then move to the input centre plus a small translation. A flip also swaps
left and right joints (``CPM14.flip_permutation``). Colour jitter works on the warped crop.

Training with neighbours (``AugmentConfig.neighbours``, issue 22): with that probability a
sample gets one or two other people of the batch pasted beside and partly over the target
(each warped with its own random scale, rotation and flip, cut out with the soft skeleton
mask of ``poseviewer.train2d.crowd``); their labels are dropped, and the target's joints
they cover are marked unlabelled, so the network learns to answer for the person in the
middle of the crop only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from poseviewer.skeleton import CPM14
from poseviewer.train2d.crowd import LIMB_WIDTH, person_mask
from poseviewer.train2d.data import PAD_VALUE, apply_affine

FLIP = CPM14.flip_permutation()


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentation."""

    box: float = 1.6
    """Input side / person extent at scale 1 (the evaluation crop)."""
    scale: tuple[float, float] = (0.75, 1.25)
    """Zoom factor range (log-uniform)."""
    full_circle: float = 0.5
    """Probability of a rotation drawn from the full circle; otherwise +-``small_rotation``."""
    small_rotation: float = 30.0
    """Degrees."""
    translate: float = 0.08
    """Max shift as a fraction of the input side."""
    flip: float = 0.5
    """Probability of a horizontal flip."""
    brightness: float = 0.25
    contrast: float = 0.3
    channel_gain: float = 0.1
    grey: float = 0.1
    """Probability of turning the crop grey."""
    neighbours: float = 0.0
    """Probability of pasting other people of the batch beside and over the target."""
    neighbour_count: tuple[int, int] = (1, 2)
    """How many neighbours (inclusive range)."""
    neighbour_offset: tuple[float, float] = (0.3, 0.65)
    """A neighbour's centre lies this far (fraction of the input side) left or right of
    the target's."""


def sample_affine(rng: np.random.Generator, cache_size: int, enlarge: float, input_size: int,
                  cfg: AugmentConfig | None, ) -> tuple[np.ndarray, bool]:
    """2x3 affine cache -> input and whether it flips. ``cfg=None``: the evaluation crop."""
    base = input_size / (cache_size / enlarge * (cfg.box if cfg else 1.6))
    if cfg is None:
        s, theta, flip, t = base, 0.0, False, np.zeros(2)
    else:
        s = base * float(np.exp(rng.uniform(np.log(cfg.scale[0]), np.log(cfg.scale[1]))))
        if rng.random() < cfg.full_circle:
            theta = rng.uniform(-np.pi, np.pi)
        else:
            theta = np.deg2rad(rng.uniform(-cfg.small_rotation, cfg.small_rotation))
        flip = bool(rng.random() < cfg.flip)
        t = rng.uniform(-cfg.translate, cfg.translate, size=2) * input_size
    c, si = np.cos(theta) * s, np.sin(theta) * s
    a = np.array([[c, -si], [si, c]])
    if flip:
        a = a @ np.diag([-1.0, 1.0])
    centre_in = np.array([input_size / 2, input_size / 2]) + t
    centre_cache = np.array([cache_size / 2, cache_size / 2])
    m = np.concatenate([a, (centre_in - a @ centre_cache)[:, None]], axis=1)
    return m, flip


def warp_sample(image: np.ndarray, joints: np.ndarray, visible: np.ndarray, m: np.ndarray,
                flip: bool, input_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp one cache image and its joints; returns (crop uint8, joints, visible)."""
    crop = cv2.warpAffine(np.ascontiguousarray(image), m, (input_size, input_size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(PAD_VALUE,) * 3)
    xy = apply_affine(m, joints.astype(np.float64)).astype(np.float32)
    vis = visible.copy()
    if flip:
        xy, vis = xy[FLIP], vis[FLIP]
    return crop, xy, vis


def colour_jitter(rng: np.random.Generator, crop: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """Random brightness, contrast, per-channel gain and greyscale; float32 0..255."""
    x = crop.astype(np.float32)
    if rng.random() < cfg.grey:
        x[:] = x.mean(axis=2, keepdims=True)
    mean = x.mean()
    contrast = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    gain = 1.0 + rng.uniform(-cfg.channel_gain, cfg.channel_gain, size=3).astype(np.float32)
    bright = rng.uniform(-cfg.brightness, cfg.brightness) * 255.0
    x = (x - mean) * contrast + mean + bright
    x *= gain
    return np.clip(x, 0.0, 255.0)


def make_batch(rng: np.random.Generator, images: np.ndarray, joints: np.ndarray,
               visible: np.ndarray, idx: np.ndarray, cache_enlarge: float, input_size: int,
               cfg: AugmentConfig | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops (B, S, S, 3) float32 0..255 RGB, joints (B, 14, 2) input px, visible (B, 14)."""
    n = len(idx)
    out = np.empty((n, input_size, input_size, 3), dtype=np.float32)
    xy = np.empty((n, joints.shape[1], 2), dtype=np.float32)
    vis = np.empty((n, joints.shape[1]), dtype=bool)
    cache_size = images.shape[1]
    for k, i in enumerate(idx):
        m, flip = sample_affine(rng, cache_size, cache_enlarge, input_size, cfg)
        crop, xy[k], vis[k] = warp_sample(images[i], joints[i], visible[i], m, flip, input_size)
        if cfg is not None and cfg.neighbours > 0 and len(idx) > 1 \
                and rng.random() < cfg.neighbours:
            others = np.asarray(idx)[np.arange(len(idx)) != k]
            crop, vis[k] = paste_neighbours(rng, crop, xy[k], vis[k], images, joints, visible,
                                            others, cache_enlarge, cfg)
        out[k] = colour_jitter(rng, crop, cfg) if cfg is not None else crop
    return out, xy, vis


def paste_neighbours(rng: np.random.Generator, crop: np.ndarray, xy: np.ndarray,
                     vis: np.ndarray, images: np.ndarray, joints: np.ndarray,
                     visible: np.ndarray, pool: np.ndarray, cache_enlarge: float,
                     cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``cfg.neighbour_count`` people from cache rows ``pool`` beside and over the
    target of ``crop`` (uint8, input pixels). Returns the new crop and the target's
    visibility (joints a neighbour covers, mask above one half, become unlabelled); the
    target's positions ``xy`` do not move and the neighbours' labels are dropped."""
    size = crop.shape[0]
    out = crop.astype(np.float32)
    vis = vis.copy()
    n = int(rng.integers(cfg.neighbour_count[0], cfg.neighbour_count[1] + 1))
    for r in rng.choice(pool, size=min(n, len(pool)), replace=False):
        m, flip = sample_affine(rng, images.shape[1], cache_enlarge, size, cfg)
        side = rng.choice([-1.0, 1.0])
        m[:, 2] += [side * rng.uniform(*cfg.neighbour_offset) * size,
                    rng.uniform(-0.15, 0.15) * size]
        img, nxy, nvis = warp_sample(images[r], joints[r], visible[r], m, flip, size)
        if nvis.sum() < 2:
            continue
        ext = float(np.ptp(nxy[nvis], axis=0).max())
        alpha = person_mask(nxy, nvis, (size, size), LIMB_WIDTH * max(ext, 8.0))[..., None]
        out = out * (1 - alpha) + img.astype(np.float32) * alpha
        p = np.round(xy).astype(int)
        ok = vis & (p[:, 0] >= 0) & (p[:, 0] < size) & (p[:, 1] >= 0) & (p[:, 1] < size)
        covered = np.zeros(len(vis), bool)
        covered[ok] = alpha[p[ok, 1], p[ok, 0], 0] > 0.5
        vis &= ~covered
    return np.clip(np.round(out), 0, 255).astype(np.uint8), vis

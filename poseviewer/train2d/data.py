"""LSP-extended annotations, the fixed validation split and the pre-cropped image cache.

The cache holds every photo once, cropped to a square box around its annotated joints
(enlarged ``enlarge`` times, 2.2 by default, so rotation and scale augmentation keep
context), resized to ``size`` x ``size`` and stored as uint8 RGB. Pixels outside the photo
are mid-grey (128, i.e. 0 after the network's normalisation). Joint positions are stored
in cache pixels; the person's box centre is the cache centre.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from poseviewer.atomic import atomic_write_with
from poseviewer.skeleton import LSP14, LSP_TO_CPM

#: Pixel value for areas outside the photo (normalises to 0 with pixel / 255 - 0.5).
PAD_VALUE = 128


@dataclass(frozen=True)
class Annotations:
    """LSP-extended labels in CPM-14 order."""

    names: np.ndarray
    """(N,) image file names."""
    joints: np.ndarray
    """(N, 14, 2) float32 xy in photo pixels (meaningless where not visible)."""
    visible: np.ndarray
    """(N, 14) bool: the joint is annotated (v = 1)."""


def load_annotations(root: str | os.PathLike[str]) -> Annotations:
    """Read ``root/annotations.npz`` (LSP-14, [x, y, v]) and reorder to CPM-14."""
    path = Path(root) / "annotations.npz"
    if not path.is_file():
        raise FileNotFoundError(f"LSP-extended annotations not found: {path}")
    with np.load(path) as d:
        if "joints" not in d or "image_names" not in d:
            raise ValueError(f"{path} must hold 'joints' and 'image_names'")
        raw = np.asarray(d["joints"], dtype=np.float32)
        names = np.asarray(d["image_names"])
    n = LSP14.num_joints
    if raw.ndim != 3 or raw.shape[1:] != (n, 3) or len(names) != len(raw):
        raise ValueError(f"{path}: joints must be (N, {n}, 3) with N names, got {raw.shape}")
    cpm = raw[:, LSP_TO_CPM]
    return Annotations(names=names, joints=cpm[..., :2].copy(), visible=cpm[..., 2] > 0.5)


def split_indices(n: int, n_val: int = 1000, seed: int = 2017) -> tuple[np.ndarray, np.ndarray]:
    """Fixed train/validation split: a seeded permutation; the first ``n_val`` validate.

    Returns sorted index arrays (train, val).
    """
    if not 0 < n_val < n:
        raise ValueError(f"n_val must be in (0, {n}), got {n_val}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def person_box(joints: np.ndarray, visible: np.ndarray, min_extent: float = 16.0
               ) -> tuple[np.ndarray, float]:
    """Centre (2,) and extent (larger side of the visible joints' bounding box) of a person."""
    pts = joints[visible]
    if len(pts) == 0:
        raise ValueError("a person needs at least one annotated joint")
    lo, hi = pts.min(0), pts.max(0)
    return ((lo + hi) / 2).astype(np.float64), float(max((hi - lo).max(), min_extent))


def crop_affine(centre: np.ndarray, side: float, size: int) -> np.ndarray:
    """2x3 affine mapping photo pixels to a ``size`` crop of the square box (centre, side)."""
    s = size / side
    return np.array([[s, 0.0, size / 2 - s * centre[0]],
                     [0.0, s, size / 2 - s * centre[1]]], dtype=np.float64)


def apply_affine(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (..., 2) points."""
    return xy @ m[:, :2].T + m[:, 2]


@dataclass
class Cache:
    """Pre-cropped images (N, S, S, 3) uint8 RGB with joints in cache pixels."""

    images: np.ndarray
    joints: np.ndarray
    """(N, 14, 2) float32 cache pixels."""
    visible: np.ndarray
    """(N, 14) bool."""
    enlarge: float
    """Box side / person extent used for the cache."""
    names: np.ndarray

    @property
    def size(self) -> int:
        """Cache image side."""
        return int(self.images.shape[1])


def build_cache(root: str | os.PathLike[str], out_dir: str | os.PathLike[str], size: int = 192,
                enlarge: float = 2.2, progress: bool = True) -> Path:
    """Crop every LSP-extended photo once into ``out_dir`` (images.npy + meta.npz)."""
    root = Path(root)
    ann = load_annotations(root)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(ann.names)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    joints = np.empty((n, 14, 2), dtype=np.float32)
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="caching crops", unit="img")
    for i in it:
        path = root / "images" / str(ann.names[i])
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {path}")
        centre, extent = person_box(ann.joints[i], ann.visible[i])
        m = crop_affine(centre, enlarge * extent, size)
        crop = cv2.warpAffine(bgr, m, (size, size), flags=cv2.INTER_AREA
                              if extent * enlarge > size else cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3)
        images[i] = crop[..., ::-1]
        joints[i] = apply_affine(m, ann.joints[i])
    _atomic_save(out / "images.npy", lambda f: np.save(f, images))
    _atomic_save(out / "meta.npz", lambda f: np.savez(
        f, joints=joints, visible=ann.visible, names=ann.names))
    (out / "cache.json").write_text(json.dumps({"size": size, "enlarge": enlarge, "n": n}))
    return out


def _atomic_save(path: Path, write) -> None:
    atomic_write_with(path, write)


def load_cache(cache_dir: str | os.PathLike[str], mmap: bool = False) -> Cache:
    """Load a cache written by :func:`build_cache`."""
    d = Path(cache_dir)
    info_path = d / "cache.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"no crop cache in {d} (run 'poseviewer train-2d' to build it)")
    info = json.loads(info_path.read_text())
    images = np.load(d / "images.npy", mmap_mode="r" if mmap else None)
    with np.load(d / "meta.npz") as m:
        return Cache(images=images, joints=m["joints"], visible=m["visible"].astype(bool),
                     enlarge=float(info["enlarge"]), names=m["names"])

"""Robust image loading: any file OpenCV reads (EXIF-rotated JPEG, PNG with alpha, 16-bit,
grayscale) or a numpy array, returned as RGB uint8 (H, W, 3) with notes for the user."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poseviewer.errors import ImageError  # noqa: F401  (raised here; re-exported)

#: Images above this many pixels are downscaled (with a message) before analysis.
MAX_PIXELS = 40_000_000
#: Files whose decoded size would exceed this are refused (OpenCV's own limit is 2^30).
HARD_MAX_PIXELS = 1 << 30
#: Images with a side shorter than this are refused: too small to hold a person.
MIN_SIDE = 16
#: Transparent pixels are composited on this grey (RGB), the CNN's neutral input (128/255
#: - 0.5 is about 0 after normalisation).
NEUTRAL_BACKGROUND = (128, 128, 128)
ALPHA_NOTE = "transparent pixels composited on a neutral grey background"


@dataclass
class LoadedImage:
    """An RGB uint8 image and what happened while loading it."""

    rgb: np.ndarray
    path: str | None = None
    messages: list[str] = field(default_factory=list)
    scale: float = 1.0
    """Analysed size / original size (1.0 unless the image was downscaled)."""
    original_size: tuple[int, int] = (0, 0)
    """(width, height) before any downscaling (after EXIF rotation)."""


def to_rgb8(array: np.ndarray, messages: list[str] | None = None, bgr: bool = False
            ) -> np.ndarray:
    """Convert gray / RGB / RGBA (uint8, uint16, bool or float in [0, 1]) to RGB uint8.

    An alpha channel is composited on ``NEUTRAL_BACKGROUND`` (with a note) unless every
    pixel is opaque; 16-bit values are scaled by 255/65535; float images must lie in [0, 1].
    """
    notes = messages if messages is not None else []
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"unsupported image shape {a.shape}: expected (H, W), (H, W, 1), "
                         "(H, W, 3) or (H, W, 4)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(f"empty image (shape {a.shape})")
    if a.dtype == np.uint8:
        unit = a.astype(np.float32) / 255.0 if a.ndim == 3 and a.shape[2] == 4 else None
    elif a.dtype == np.uint16:
        unit = a.astype(np.float32) / 65535.0
        notes.append("16-bit image converted to 8 bits")
    elif a.dtype == np.bool_:
        unit = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.floating):
        finite = np.isfinite(a)
        if not finite.all() or a.min() < 0.0 or a.max() > 1.0:
            raise ImageError("float images must hold finite values in [0, 1]")
        unit = a
    else:
        raise ImageError(f"unsupported image dtype {a.dtype} (use uint8, uint16 or float)")
    if a.ndim == 3 and a.shape[2] == 4:
        alpha = unit[..., 3:]
        if alpha.min() < 1.0:  # composite: colour * alpha + background * (1 - alpha)
            bg = np.asarray(NEUTRAL_BACKGROUND, np.float32)[::-1 if bgr else 1] / 255.0
            unit = unit[..., :3] * alpha + bg * (1.0 - alpha)
            notes.append(ALPHA_NOTE)
        else:
            unit = unit[..., :3]
        a = a[..., :3]
    if unit is not None:
        a = np.round(unit * 255.0).astype(np.uint8)
    if a.ndim == 2:
        return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
    if bgr:
        a = a[..., ::-1]
    return np.ascontiguousarray(a)


def _may_have_alpha(raw: np.ndarray) -> bool:
    """PNG, WebP, TIFF and JPEG 2000 files can carry an alpha channel (JPEG cannot)."""
    head = raw[:12].tobytes()
    return (head.startswith(b"\x89PNG") or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
            or head[:4] in (b"II*\x00", b"MM\x00*") or head.startswith(b"\x00\x00\x00\x0cjP"))


def _decode_file(path: Path) -> np.ndarray:
    import cv2

    if not path.exists():
        raise ImageError(f"image not found: {path}")
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image")
    try:
        raw = np.fromfile(str(path), dtype=np.uint8)  # works with non-ASCII paths
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc}") from exc
    if raw.size == 0:
        raise ImageError(f"{path} is empty")
    # IMREAD_COLOR applies the EXIF orientation; ANYDEPTH keeps 16-bit samples.
    img = cv2.imdecode(raw, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise ImageError(f"cannot decode {path}: not an image OpenCV can read, truncated, "
                         f"or larger than {HARD_MAX_PIXELS} pixels")
    if _may_have_alpha(raw):  # IMREAD_COLOR drops alpha: read it as stored (BGRA)
        full = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
        if (full is not None and full.ndim == 3 and full.shape[2] == 4
                and np.array_equal(full[..., :3], img)):  # same pixels, same orientation
            return full
    return img


def load_image(source: str | os.PathLike[str] | np.ndarray, max_pixels: int = MAX_PIXELS,
               min_side: int = MIN_SIDE) -> LoadedImage:
    """Load a path or an RGB(A)/gray array as RGB uint8; downscale above ``max_pixels``;
    refuse images with a side below ``min_side`` (``ImageError``)."""
    import cv2

    messages: list[str] = []
    path = None
    if isinstance(source, np.ndarray):
        rgb = to_rgb8(source, messages)
    elif isinstance(source, (str, os.PathLike)):
        path = str(source)
        rgb = to_rgb8(_decode_file(Path(source)), messages, bgr=True)
    else:
        raise ImageError(f"expected an image path or a numpy array, got {type(source).__name__}")
    h, w = rgb.shape[:2]
    if min(h, w) < min_side:
        where = f"{path}: " if path else ""
        raise ImageError(f"{where}the image is {w}x{h} pixels, too small to find a person in "
                         f"(at least {min_side} x {min_side})")
    scale = 1.0
    if h * w > max_pixels:
        scale = float(np.sqrt(max_pixels / (h * w)))
        nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        scale = nw / w
        messages.append(f"image downscaled from {w}x{h} to {nw}x{nh} "
                        f"(above {max_pixels / 1e6:g} megapixels)")
    return LoadedImage(rgb=rgb, path=path, messages=messages, scale=scale,
                       original_size=(w, h))

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
#: The suffixes read as photos (folders are searched for them; the viewer's Open dialog).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
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


def _png_header(b: bytes) -> tuple[int, int, bool] | None:
    """(width, height, may have alpha) from a PNG's IHDR (and a tRNS chunk before IDAT)."""
    if len(b) < 33 or not b.startswith(b"\x89PNG\r\n\x1a\n") or b[12:16] != b"IHDR":
        return None
    w, h = int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
    alpha = b[25] in (4, 6)  # colour type: grey + alpha, RGB + alpha
    pos = 33
    while not alpha and pos + 8 <= len(b):  # a tRNS chunk (before the image data)
        n, kind = int.from_bytes(b[pos:pos + 4], "big"), b[pos + 4:pos + 8]
        if kind in (b"IDAT", b"IEND"):
            break
        alpha = kind == b"tRNS"
        pos += 12 + n
    return w, h, alpha


def _exif_orientation(seg: bytes) -> int:
    """The EXIF orientation (1-8) in a JPEG APP1 segment's payload, 1 when absent."""
    if not seg.startswith(b"Exif\x00\x00") or len(seg) < 14:
        return 1
    t = seg[6:]
    order = {b"II": "little", b"MM": "big"}.get(t[:2])
    if order is None:
        return 1
    ifd = int.from_bytes(t[4:8], order)
    if ifd + 2 > len(t):
        return 1
    for i in range(int.from_bytes(t[ifd:ifd + 2], order)):
        e = ifd + 2 + 12 * i
        if e + 12 > len(t):
            break
        if int.from_bytes(t[e:e + 2], order) == 0x0112:
            value = int.from_bytes(t[e + 8:e + 10], order)
            return value if 1 <= value <= 8 else 1
    return 1


def _jpeg_header(b: bytes) -> tuple[int, int, int] | None:
    """(width, height, EXIF orientation) from a JPEG's markers, or None."""
    if not b.startswith(b"\xff\xd8"):
        return None
    pos, orientation = 2, 1
    while pos + 4 <= len(b):
        if b[pos] != 0xFF:
            return None
        marker = b[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        n = int.from_bytes(b[pos + 2:pos + 4], "big")
        if marker == 0xE1:
            orientation = _exif_orientation(b[pos + 4:pos + 2 + n])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header
            if pos + 9 > len(b):
                return None
            h = int.from_bytes(b[pos + 5:pos + 7], "big")
            w = int.from_bytes(b[pos + 7:pos + 9], "big")
            return w, h, orientation
        if marker == 0xDA:  # scan data before any frame header: give up
            return None
        pos += 2 + n
    return None


def image_header(raw: np.ndarray | bytes) -> tuple[str, int, int, bool] | None:
    """What a PNG's or JPEG's header says, read before decoding: (format, width, height
    as displayed (EXIF rotation applied), may have alpha); None for other formats or when
    the header cannot be read (the decoder then has its say)."""
    b = raw[:1 << 20].tobytes() if isinstance(raw, np.ndarray) else bytes(raw[:1 << 20])
    png = _png_header(b)
    if png is not None:
        return "png", png[0], png[1], png[2]
    jpg = _jpeg_header(b)
    if jpg is not None:
        w, h, orientation = jpg
        return ("jpeg", h, w, False) if orientation >= 5 else ("jpeg", w, h, False)
    return None


#: Decoding a large file in colour at 1/k of its size: k -> OpenCV's flag (EXIF rotation
#: applied in every mode).
_REDUCED = {1: "IMREAD_COLOR", 2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4",
            8: "IMREAD_REDUCED_COLOR_8"}


def _reduction(pixels: int, max_pixels: int) -> int:
    """The largest factor k of 1, 2, 4, 8 that keeps ``pixels / k^2`` at or above
    ``max_pixels``: the reduced image is then downscaled to ``max_pixels``, never enlarged."""
    return max(k for k in _REDUCED if k == 1 or pixels / (k * k) >= max_pixels)


def _decode_file(path: Path, max_pixels: int | None = None
                 ) -> tuple[np.ndarray, tuple[int, int] | None, str | None]:
    """Decode a file: (pixels as OpenCV gives them, BGR(A); the file's displayed size (w, h)
    when it was decoded by the large-file route, else None; a note or None).

    The large-file route, for a PNG or JPEG whose header says it holds more than
    ``max_pixels``: one 8-bit colour decode at 1/k of the size, k = 1, 2, 4 or 8 the largest
    that keeps at least ``max_pixels`` (OpenCV's reduced modes; the caller downscales the
    rest of the way). A JPEG is decoded at that size (libjpeg's scaled decoding); a PNG is
    still inflated whole by OpenCV, but once, in 8-bit colour (no second decode for
    transparency, which is then ignored with a note; no 16-bit copy)."""
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
    head = image_header(raw)
    if head is not None and head[1] * head[2] > HARD_MAX_PIXELS:
        raise ImageError(f"{path}: {head[1]}x{head[2]} pixels, larger than OpenCV decodes "
                         f"({HARD_MAX_PIXELS} pixels)")
    if head is not None and max_pixels is not None and head[1] * head[2] > max_pixels:
        fmt, w, h, alpha = head
        k = _reduction(w * h, max_pixels)
        img = cv2.imdecode(raw, getattr(cv2, _REDUCED[k]))
        if img is None:
            raise ImageError(f"cannot decode {path}: damaged or truncated")
        if max(abs(img.shape[1] - w / k), abs(img.shape[0] - h / k)) > 1:  # header misread
            w, h = img.shape[1] * k, img.shape[0] * k
        note = (f"decoded at 1/{k} size ({w}x{h} pixels in the file)" if k > 1 else None)
        if alpha:
            note = ((note + "; ") if note else "") + (
                "its transparency was ignored (above the size limit)")
        return img, (w, h), note
    # IMREAD_COLOR applies the EXIF orientation; ANYDEPTH keeps 16-bit samples.
    img = cv2.imdecode(raw, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:
        if head is not None:  # a known format whose size is within the limit
            raise ImageError(f"cannot decode {path}: damaged or truncated "
                             f"({head[1]}x{head[2]} pixels announced)")
        raise ImageError(f"cannot decode {path}: not an image OpenCV can read, truncated, "
                         f"or larger than {HARD_MAX_PIXELS} pixels")
    if (head is None or head[3]) and _may_have_alpha(raw):  # IMREAD_COLOR drops alpha:
        full = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)  # read it as stored (BGRA)
        if (full is not None and full.ndim == 3 and full.shape[2] == 4
                and np.array_equal(full[..., :3], img)):  # same pixels, same orientation
            return full, None, None
    return img, None, None


def load_image(source: str | os.PathLike[str] | np.ndarray, max_pixels: int = MAX_PIXELS,
               min_side: int = MIN_SIDE) -> LoadedImage:
    """Load a path or an RGB(A)/gray array as RGB uint8; downscale above ``max_pixels``;
    refuse images with a side below ``min_side`` (``ImageError``)."""
    import cv2

    messages: list[str] = []
    path = None
    if isinstance(source, np.ndarray):
        pixels, full_size, bgr = source, None, False
    elif isinstance(source, (str, os.PathLike)):
        path = str(source)
        pixels, full_size, note = _decode_file(Path(source), max_pixels)
        messages += [note] if note else []
        bgr = True
    else:
        raise ImageError(f"expected an image path or a numpy array, got {type(source).__name__}")
    if full_size is None:
        rgb = to_rgb8(pixels, messages, bgr=bgr)
        h, w = rgb.shape[:2]
    else:  # the large-file route decoded at reduced size: the file's own size counts
        w, h = full_size
    if min(h, w) < min_side:
        where = f"{path}: " if path else ""
        raise ImageError(f"{where}the image is {w}x{h} pixels, too small to find a person in "
                         f"(at least {min_side} x {min_side})")
    scale = 1.0
    if h * w > max_pixels:
        scale = float(np.sqrt(max_pixels / (h * w)))
        nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
        if full_size is None:
            rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        else:  # 8-bit colour: downscaled before the RGB copy
            rgb = to_rgb8(cv2.resize(pixels, (nw, nh), interpolation=cv2.INTER_AREA),
                          messages, bgr=bgr)
        scale = nw / w
        messages.append(f"image downscaled from {w}x{h} to {nw}x{nh} "
                        f"(above {max_pixels / 1e6:g} megapixels)")
    elif full_size is not None:
        rgb = to_rgb8(pixels, messages, bgr=bgr)
    return LoadedImage(rgb=rgb, path=path, messages=messages, scale=scale,
                       original_size=(w, h))

"""Image preprocessing for the CPMs (the release's exactly, and box crops) and PersonNet's
person-centre detection."""

from __future__ import annotations

import numpy as np

from poseviewer.cnn.config import CPMConfig, PeakConfig


def normalise(rgb: np.ndarray, cfg: CPMConfig) -> np.ndarray:
    """(..., 3) RGB pixels -> network input in float64, then float32 (channel order from the
    config). Computed as pixel / d + offset when d = 1 / norm_scale is an integer (the
    release's pixel / 255 - 0.5; multiplying by 1/255 differs in the last bit)."""
    x = np.asarray(rgb, dtype=np.float64)
    if cfg.channel_order == "BGR":
        x = x[..., ::-1]
    d = 1.0 / cfg.norm_scale
    x = x / d if d == round(d) else x * cfg.norm_scale
    return (x + cfg.norm_offset).astype(np.float32)


def release_resize(rgb: np.ndarray, cfg: CPMConfig) -> tuple[np.ndarray, float]:
    """The release's resize: s = input_size / height, ``cv2.resize(fx=s, fy=s, INTER_CUBIC)``
    (an explicit output size would change about a fifth of the pixels)."""
    import cv2

    s = cfg.input_size / rgb.shape[0]
    return cv2.resize(rgb, (0, 0), fx=s, fy=s, interpolation=cv2.INTER_CUBIC), s


def crop_centred(img: np.ndarray, xc: int, yc: int, size: int) -> np.ndarray:
    """(size, size, C) crop with rows yc - size/2 ... and columns xc - size/2 ..., zeros
    outside the image (the release's pad-by-200-then-crop, for any centre)."""
    h, w = img.shape[:2]
    out = np.zeros((size, size) + img.shape[2:], dtype=img.dtype)
    y0, x0 = int(yc) - size // 2, int(xc) - size // 2
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + size, h), min(x0 + size, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return out


def warp_crop(rgb: np.ndarray, centre: np.ndarray, scale: float, cfg: CPMConfig
              ) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (S, S, 3) crop of the image scaled by ``scale`` and centred on ``centre``
    (image pixels, x y), sampled directly with one cubic warp; outside the image the input
    is 0 (as the release's zero padding). Returns (crop, crop_to_image 2x3 affine)."""
    import cv2

    size = cfg.input_size
    # crop (u, v) <- image ((u - S/2) / s + cx, ...), pixel centres at integers
    inv = np.array([[1.0 / scale, 0.0, centre[0] - (size / 2) / scale],
                    [0.0, 1.0 / scale, centre[1] - (size / 2) / scale]])
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    src = rgb
    if scale < 0.5:  # avoid aliasing on big downscales: pre-shrink with area averaging
        pre = max(scale * 2.0, 1e-6)
        src = cv2.resize(rgb, (max(1, round(rgb.shape[1] * pre)), max(1, round(rgb.shape[0]
                         * pre))), interpolation=cv2.INTER_AREA)
        sx, sy = src.shape[1] / rgb.shape[1], src.shape[0] / rgb.shape[0]
        # image pixel x maps to src pixel (x + 0.5) * sx - 0.5
        m = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
        warp = np.vstack([m, [0, 0, 1]]) @ np.vstack([inv, [0, 0, 1]])
        warp = warp[:2]
    else:
        warp = inv
    crop = cv2.warpAffine(src, warp, (size, size), flags=flags,
                          borderMode=cv2.BORDER_REPLICATE)
    ones = np.ones(src.shape[:2], np.uint8)
    inside = cv2.warpAffine(ones, warp, (size, size), flags=cv2.INTER_NEAREST
                            | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
    out = normalise(crop, cfg) * inside[..., None].astype(np.float32)
    return out, inv


def find_person_centres(person_map: np.ndarray, peaks: PeakConfig) -> list[tuple[int, int]]:
    """PersonNet's centres from its resized map (H, W): v = scale * map; peaks where v equals
    its 3x3 maximum and (3x3 max - 3x3 min) > min_range (outside pixels ignored); peak pixels
    labelled into 4-connected regions in raster order; centre = middle of each region's
    bounding box (integer, (min + max) // 2); kept when the map's own value there (not v)
    > min_value; the first ``max_people`` in raster order. Returns (x, y) in map pixels."""
    from scipy import ndimage

    m = np.asarray(person_map, dtype=np.float32)
    v = m * np.float32(peaks.scale)
    # 'nearest' replicates edge pixels that are already inside each 3x3 window, so max/min
    # equal those over the pixels inside the map
    vmax = ndimage.maximum_filter(v, size=3, mode="nearest")
    vmin = ndimage.minimum_filter(v, size=3, mode="nearest")
    is_peak = (v == vmax) & ((vmax - vmin) > peaks.min_range)
    labels, n = ndimage.label(is_peak)  # default structure: 4-connectivity, raster order
    centres: list[tuple[int, int]] = []
    for sl in ndimage.find_objects(labels):
        if sl is None:
            continue
        yc = (sl[0].start + sl[0].stop - 1) // 2
        xc = (sl[1].start + sl[1].stop - 1) // 2
        if m[yc, xc] > peaks.min_value:  # the map itself, not v (weak peaks are not people)
            centres.append((xc, yc))
        if len(centres) == peaks.max_people:
            break
    return centres

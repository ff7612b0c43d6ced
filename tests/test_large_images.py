"""Large image files are decoded at reduced size (OpenCV's reduced modes, chosen from the
file's header before decoding), so memory follows the analysed size, not the file's."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from poseviewer.imageio import ImageError, image_header, load_image

ROOT = Path(__file__).resolve().parents[1]


def _smooth(w: int, h: int) -> np.ndarray:
    """A smooth colour image with a few edges (compresses well, resizes predictably)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], -1)
    img[h // 3: h // 2, w // 4: w // 2] = (30, 200, 60)
    return img.astype(np.uint8)


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an EXIF APP1 segment holding only the orientation tag."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack(
        "<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    cv2.imwrite(str(path), _smooth(4000, 3000)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def test_header_sizes_by_hand(tmp_path, big_jpeg) -> None:
    assert image_header(np.fromfile(big_jpeg, np.uint8)) == ("jpeg", 4000, 3000, False)
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), np.zeros((30, 50, 4), np.uint8))
    assert image_header(png.read_bytes()) == ("png", 50, 30, True)
    cv2.imwrite(str(png), np.zeros((30, 50, 3), np.uint8))
    assert image_header(png.read_bytes()) == ("png", 50, 30, False)
    rotated = _with_orientation(big_jpeg.read_bytes(), 6)  # 90 degrees: displayed 3000 x 4000
    assert image_header(rotated) == ("jpeg", 3000, 4000, False)
    assert image_header(b"GIF89a....") is None


def test_large_jpeg_decoded_reduced_matches_the_full_decode(big_jpeg, monkeypatch) -> None:
    """12 MP, limit 0.7 MP: decoded at 1/4 (750,000 pixels, not 12 million), then downscaled
    to the limit; the same picture as the full decode downscaled."""
    decoded = []
    real = cv2.imdecode

    def spy(buf, flags):
        out = real(buf, flags)
        decoded.append(None if out is None else out.shape)
        return out

    monkeypatch.setattr(cv2, "imdecode", spy)
    img = load_image(big_jpeg, max_pixels=700_000)
    assert decoded == [(750, 1000, 3)]  # one decode, at a quarter of each side
    assert img.original_size == (4000, 3000)
    assert img.rgb.shape[0] * img.rgb.shape[1] <= 700_000
    assert img.scale == pytest.approx(img.rgb.shape[1] / 4000)
    assert any("decoded at 1/4 size (4000x3000 pixels in the file)" in m for m in img.messages)
    monkeypatch.setattr(cv2, "imdecode", real)
    full = cv2.cvtColor(cv2.imread(str(big_jpeg)), cv2.COLOR_BGR2RGB)
    want = cv2.resize(full, img.rgb.shape[1::-1], interpolation=cv2.INTER_AREA)
    diff = np.abs(img.rgb.astype(int) - want.astype(int))
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 12


def test_rotated_large_jpeg_keeps_its_displayed_size(tmp_path, big_jpeg) -> None:
    path = tmp_path / "rot.jpg"
    path.write_bytes(_with_orientation(big_jpeg.read_bytes(), 6))
    img = load_image(path, max_pixels=700_000)
    assert img.original_size == (3000, 4000)
    assert img.rgb.shape[0] > img.rgb.shape[1]  # portrait, as displayed
    small = load_image(path)  # under the limit: the ordinary full decode, same rotation
    assert small.original_size == (3000, 4000) and small.rgb.shape[:2] == (4000, 3000)


def test_large_png_one_colour_decode(tmp_path, monkeypatch) -> None:
    path = tmp_path / "big.png"
    rgba = np.dstack([_smooth(1600, 1200), np.full((1200, 1600), 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    cv2.imwrite(str(path), rgba)
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda b, f: decoded.append(f) or real(b, f))
    img = load_image(path, max_pixels=400_000)
    assert decoded == [cv2.IMREAD_REDUCED_COLOR_2]  # no second, full-size decode for alpha
    assert img.original_size == (1600, 1200)
    assert any("transparency was ignored" in m for m in img.messages)


def test_a_header_beyond_the_hard_limit_is_refused_before_decoding(tmp_path,
                                                                  monkeypatch) -> None:
    """A 40000 x 40000 PNG (1.6 gigapixels; its IHDR is all that is read)."""
    ihdr = struct.pack(">II", 40000, 40000) + bytes([8, 2, 0, 0, 0])
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
                     + b"\x00" * 4 + b"junk")
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(ImageError, match="40000x40000 pixels, larger than OpenCV decodes"):
        load_image(path)


def test_peak_memory_follows_the_reduced_size(big_jpeg) -> None:
    """In a fresh process: loading the 12 MP JPEG (36 MB of pixels) with a 0.7 MP limit
    raises the peak resident memory by a few MB, not by the full decode's 36 MB or more."""
    code = (
        "import resource, sys\n"
        "from poseviewer.imageio import load_image\n"
        "import numpy as np, cv2\n"
        "load_image(np.zeros((20, 20, 3), np.uint8))\n"
        "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"load_image({str(big_jpeg)!r}, max_pixels=700_000)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    grew_mb = int(out.stdout.split()[-1]) / 1024
    assert grew_mb < 18, f"peak memory grew by {grew_mb:.1f} MB"

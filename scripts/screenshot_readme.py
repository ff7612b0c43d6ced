#!/usr/bin/env python
"""Refresh the README's picture of the viewer: ``docs/images/viewer.png``.

Opens the viewer on the bundled full-body photo (``resources/sample_fullbody.jpg``) with
the bundled default models, waits for the result, grabs the whole window and saves it as a
palette PNG (a few hundred kB). Needs a display; on a headless machine:

    xvfb-run -a .venv/bin/python scripts/screenshot_readme.py [--out docs/images/viewer.png]

The user's settings are never read or written (a throw-away ini file).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "viewer.png")
    ap.add_argument("--image", type=Path, default=ROOT / "resources" / "sample_fullbody.jpg")
    ap.add_argument("--size", default="1400x860", help="window size WxH (default 1400x860)")
    ap.add_argument("--width", type=int, default=1100,
                    help="width of the saved picture in pixels (default 1100)")
    ap.add_argument("--crop", action="store_true",
                    help="belief maps over the person's crop (the maps panel's Crop box)")
    ap.add_argument("--elevation-search", action=argparse.BooleanOptionalAction, default=True,
                    help="Run > Search camera elevation (on, as the viewer's default; "
                    "--no-elevation-search unticks it first)")
    ap.add_argument("--uncertainty", action="store_true",
                    help="the 3D panel's ellipsoids on")
    ap.add_argument("--colours", type=int, default=192,
                    help="palette size of the saved PNG (default 192; 0: full colour)")
    args = ap.parse_args()
    if not args.image.is_file():
        print(f"screenshot_readme: image not found: {args.image}", file=sys.stderr)
        return 2

    from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    def no_dialog(parent, title, text, *a, **k):  # never wait for a click
        print(f"screenshot_readme: the viewer reported: {title}: {text}", file=sys.stderr)
        return QMessageBox.StandardButton.Ok

    QMessageBox.warning = staticmethod(no_dialog)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    from poseviewer.app import configure

    configure()
    from poseviewer.app.main_window import MainWindow

    tmp = Path(tempfile.mkdtemp(prefix="screenshot_readme_"))
    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings=settings)
    w, h = (int(v) for v in args.size.lower().split("x"))
    win.resize(w, h)
    win.show()
    win.action_elevation.setChecked(args.elevation_search)

    loop = QEventLoop()
    win.worker.succeeded.connect(lambda *_a: loop.quit())
    win.worker.failed.connect(lambda *_a: loop.quit())
    QTimer.singleShot(300_000, loop.quit)
    win.open_image(args.image)
    loop.exec()
    if win.state.result is None or win.last_error:
        print(f"screenshot_readme: no result: {win.last_error}", file=sys.stderr)
        return 1
    win.maps_panel.crop_check.setChecked(args.crop)
    win.view3d.cov_check.setChecked(args.uncertainty)
    for _ in range(5):  # let every panel draw the result (the 3D panel renders offscreen)
        app.processEvents()
        QTimer.singleShot(50, loop.quit)
        loop.exec()

    shot = win.panel_image("window")
    if args.width and shot.width() > args.width:
        shot = shot.scaledToWidth(args.width, Qt.TransformationMode.SmoothTransformation)
    raw = tmp / "window.png"
    if not shot.save(str(raw)):
        print(f"screenshot_readme: cannot write {raw}", file=sys.stderr)
        return 1
    from PIL import Image

    from poseviewer.atomic import atomic_write_with

    img = Image.open(raw).convert("RGB")
    if args.colours:
        img = img.quantize(colors=args.colours, method=Image.Quantize.MEDIANCUT, dither=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(args.out, lambda f: img.save(f, format="PNG", optimize=True))
    print(f"saved {args.out} ({img.width} x {img.height}, "
          f"{args.out.stat().st_size / 1024:.0f} kB)")
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

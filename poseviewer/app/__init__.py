"""The desktop viewer (PySide6 + pyqtgraph + vispy). The only package that imports Qt.

``main(argv)`` opens the window on ``argv[0]`` (an image or a video) or on the bundled sample
photo.
Settings live in the user's QSettings (organisation/application "poseviewer"), or in the
ini file named by ``$POSEVIEWER_SETTINGS``. With ``$POSEVIEWER_QUIT_AFTER_FIRST_RESULT=1``
the viewer prints the time from process start to the first result and quits (for timing
launches, e.g. ``time scripts/bootstrap run``).
Modules: ``worker`` (the one estimator in a QThread, for photos, videos and cameras),
``image_view``, ``maps_view``, ``view3d`` (the three panels, following the shared
:class:`poseviewer.selection.Selection`), ``controls``, ``video`` (the timeline),
``loaders`` (file jobs), ``main_window``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from poseviewer.paths import RESOURCES

_T_IMPORT = time.perf_counter()

ORGANISATION = "poseviewer"
APPLICATION = "poseviewer"


def configure() -> None:
    """Library options every view relies on (call before creating any view)."""
    import pyqtgraph as pg
    import vispy

    pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)
    vispy.use(app="pyside6")


def qt_binding_problem() -> str | None:
    """A description of a known-broken Qt binding, or None when it behaves.

    PySide6 6.12.0's ``SignalInstance.emit()`` returns ``True`` without taking a reference,
    so every emitted signal drops one reference to ``True`` until Python aborts
    ("bool_dealloc: deallocating True or False"). Detected by behaviour, not version.
    """
    import PySide6
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(64):
        probe.ping.emit()
    lost = before - sys.getrefcount(True)
    if lost >= 32:
        return (f"PySide6 {PySide6.__version__} loses a reference to True on every signal "
                "emit; the viewer would crash after a few thousand updates. Install another "
                "version: pip install 'PySide6-Essentials!=6.12.0'")
    return None


def sample_image() -> Path | None:
    """The bundled sample photo: the full-body one (``resources/sample_fullbody.jpg``), else
    ``resources/sample.*`` (the upper-body portrait), or None when absent."""
    if (RESOURCES / "sample_fullbody.jpg").is_file():
        return RESOURCES / "sample_fullbody.jpg"
    for ext in ("jpg", "jpeg", "png", "webp", "bmp"):
        p = RESOURCES / f"sample.{ext}"
        if p.is_file():
            return p
    return None


def _quit_after_first_result(app, win) -> None:
    """Print the seconds from process start to the first result (or error), then quit."""
    from PySide6.QtCore import QTimer

    def done(*_args) -> None:
        try:  # process start: /proc (Linux); else this module's import
            ticks = os.sysconf("SC_CLK_TCK")
            start = float(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
            uptime = float(Path("/proc/uptime").read_text().split()[0])
            since = uptime - start / ticks
        except (OSError, ValueError, IndexError):
            since = time.perf_counter() - _T_IMPORT
        outcome = "result" if win.last_error is None else f"error ({win.last_error[0]})"
        print(f"poseviewer: first {outcome} {since:.2f} s after the process started",
              flush=True)
        QTimer.singleShot(0, win.close)

    win.worker.succeeded.connect(done)
    win.worker.failed.connect(done)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the viewer: ``poseviewer [IMAGE or VIDEO]``. Returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0], *args])
    app.setOrganizationName(ORGANISATION)
    app.setApplicationName(APPLICATION)
    configure()
    problem = qt_binding_problem()
    if problem:
        print(f"poseviewer: {problem}", file=sys.stderr)
    from PySide6.QtCore import QSettings

    from poseviewer.app.main_window import MainWindow
    from poseviewer.app.worker import ErrorKind

    ini = os.environ.get("POSEVIEWER_SETTINGS")  # e.g. tests: never the user's settings
    settings = QSettings(ini, QSettings.Format.IniFormat) if ini else QSettings()
    win = MainWindow(settings=settings)
    win.show()
    if os.environ.get("POSEVIEWER_QUIT_AFTER_FIRST_RESULT") == "1":
        _quit_after_first_result(app, win)
    if problem:
        win.report_error(ErrorKind.ERROR, problem)
    if args:
        path = Path(args[0])
        if not path.is_file():
            win.report_error(ErrorKind.IMAGE, f"file not found: {path}")
        else:
            win.open_image(path)
    else:
        sample = sample_image()
        if sample is not None:
            win.open_image(sample)
        else:
            win.show_message_later("No bundled sample photo; open an image with File > Open "
                                   "or drop one on the window.")
    return int(app.exec())

#!/usr/bin/env python
"""Viewer benchmark (run under a real X server, e.g. ``xvfb-run -a .venv/bin/python
scripts/bench_gui.py``). Prints:

1. time from launch (process start) to the first drawn result;
2. time to switch stage / component and redraw every panel (image, maps, 3D), with the
   results cached (nothing recomputed): median, 95th percentile, max over many switches;
3. resident memory growth over N successive inferences through the window.

The estimator is the real ``Estimator`` with a tiny random-init CNN (``--cnn tiny``, so
the run is quick) or the bundled default model (``--cnn default``), always with the
bundled 3D model (per-stage lifting and fusion). Figures depend on machine load: the
script prints ``uptime`` too.
"""

from __future__ import annotations

import time

T_LAUNCH = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def make_estimator(kind: str, stages: int):
    import torch

    from poseviewer.cnn import LiftingCPM, tiny_test
    from poseviewer.cnn.config import CPMConfig
    from poseviewer.estimator import DEFAULT_POSE_MODEL, Estimator
    from poseviewer.lifting import load_pose_model

    if kind == "default":
        return Estimator.default(device="cpu")
    torch.manual_seed(0)
    cfg = CPMConfig.from_dict({**tiny_test(fusion=True, num_stages=stages).to_dict(),
                               "visibility_threshold": -1e9})
    return Estimator(LiftingCPM(cfg), load_pose_model(DEFAULT_POSE_MODEL), device="cpu")


def test_photo(path: Path, w: int = 480, h: int = 640) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    img = (rng.random((h, w, 3)) * 60 + 60).astype(np.uint8)
    cv2.rectangle(img, (w // 3, h // 8), (2 * w // 3, 7 * h // 8), (200, 180, 160), -1)
    cv2.imwrite(str(path), img)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cnn", choices=("tiny", "default"), default="tiny")
    ap.add_argument("--stages", type=int, default=6, help="stages of the tiny CNN")
    ap.add_argument("--switches", type=int, default=300)
    ap.add_argument("--inferences", type=int, default=200)
    ap.add_argument("--image", type=Path, default=None)
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also profile the stage switches (cProfile) and print the top N "
                         "functions by own time")
    args = ap.parse_args()

    from PySide6.QtCore import QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    def no_dialog(parent, title, text, *a, **k):  # a benchmark never waits for a click
        print(f"error shown to the user: {title}: {text}", file=sys.stderr)
        return QMessageBox.StandardButton.Ok

    QMessageBox.warning = staticmethod(no_dialog)

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from poseviewer.app import configure

    configure()
    from poseviewer.app.main_window import MainWindow

    tmp = Path(tempfile.mkdtemp(prefix="bench_gui_"))
    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    image = args.image or test_photo(tmp / "photo.png")
    est = make_estimator(args.cnn, args.stages)

    win = MainWindow(estimator_factory=lambda: est, settings=settings)
    win.resize(1400, 860)
    win.show()

    def wait_result(timeout_s: float = 120.0) -> None:
        loop = QEventLoop()
        done = {"ok": False}

        def finish(*_a):
            done["ok"] = True
            loop.quit()

        win.worker.succeeded.connect(finish)
        win.worker.failed.connect(finish)
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        loop.exec()
        win.worker.succeeded.disconnect(finish)
        win.worker.failed.disconnect(finish)
        if not done["ok"] or win.last_error:
            raise SystemExit(f"no result: {win.last_error}")

    from PySide6.QtCore import QEvent, QObject

    class PaintCounter(QObject):
        """Counts paint events of the three panels (proves each switch redrew them)."""

        def __init__(self) -> None:
            super().__init__()
            self.counts = {"image": 0, "maps": 0, "3d": 0}
            self.widgets = {win.image_panel.viewport(): "image",
                            win.maps_panel.glw.viewport(): "maps",
                            win.view3d.scene_view: "3d"}
            for w in self.widgets:
                w.installEventFilter(self)

        def eventFilter(self, obj, ev):  # noqa: N802
            if ev.type() == QEvent.Type.Paint and obj in self.widgets:
                self.counts[self.widgets[obj]] += 1
            return False

    painted = PaintCounter()

    def draw_all() -> None:
        """Deliver the pending updates: Qt paints every dirty panel once (the 3D panel
        renders offscreen and reads the pixels back while painting, so its GL work is done
        when this returns)."""
        app.processEvents()

    # 1. launch -> first drawn result
    win.open_image(image)
    wait_result()
    draw_all()
    t_first = time.perf_counter() - T_LAUNCH
    res = win.state.result
    print(f"launch to first drawn result: {t_first:.2f} s  (estimate itself "
          f"{res.timings.get('total', float('nan')):.2f} s; {res.num_stages} stages, "
          f"CNN '{res.model.get('name')}')")

    # 2. switching stage / component: every panel redrawn, nothing recomputed
    st = win.state
    n_stages = st.num_stages
    times = {"stage": [], "component": []}
    before = dict(painted.counts)
    for _ in range(3):  # warm-up (shader compilation etc.)
        st.step_stage(-1)
        draw_all()
    for _ in range(args.switches):
        t0 = time.perf_counter()
        st.set_stage((st.stage + 1) % n_stages)
        draw_all()
        times["stage"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        n_comp = max(st.num_components, 1)
        st.set_component(((st.component or 0) + 1) % n_comp)
        draw_all()
        times["component"].append(time.perf_counter() - t0)
    per = {k: (painted.counts[k] - before[k]) / (2 * args.switches) for k in before}
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        for _ in range(100):
            prof.enable()
            st.set_stage((st.stage + 1) % n_stages)
            draw_all()
            prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
    print("paint events per switch: " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))
    for key, ts in times.items():
        ms = np.array(ts) * 1000
        print(f"switch {key:9s} + redraw all panels: median {statistics.median(ms):.1f} ms, "
              f"p95 {np.percentile(ms, 95):.1f} ms, max {ms.max():.1f} ms "
              f"over {len(ms)} switches")

    # 3. memory over successive inferences
    import gc

    warm = 20
    for i in range(args.inferences + warm):
        if i == warm:
            gc.collect()
            rss0 = rss_mb()
            t0 = time.perf_counter()
        win.open_image(image)
        wait_result()
        draw_all()
    gc.collect()
    rss1 = rss_mb()
    per = (time.perf_counter() - t0) / args.inferences
    print(f"memory over {args.inferences} inferences (after {warm} warm-up): "
          f"{rss0:.1f} MB -> {rss1:.1f} MB, growth {rss1 - rss0:+.1f} MB "
          f"({per * 1000:.0f} ms per inference incl. redraw)")
    win.close()
    try:
        print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    except OSError:
        pass
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

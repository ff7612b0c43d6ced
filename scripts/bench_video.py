"""Video benchmark (issue 12): frames per second of ``estimate_video`` on a 640 x 480 clip
with the default network, one person (goal >= 10 frames/s), and how much the One Euro
smoothing reduces the frame-to-frame jitter of the 3D joints.

The clip is written here (OpenCV VideoWriter, mp4v): the bundled full-body photo moving
across a plain background, 4 px a frame, as in tests/test_video.py. The person's pose does
not change, so every frame-to-frame change of the root-relative 3D joints is jitter.

    .venv/bin/python scripts/bench_video.py [--frames 30] [--device cpu]
    xvfb-run -a .venv/bin/python scripts/bench_video.py --scrub   # + the viewer's scrubbing
    .venv/bin/python scripts/bench_video.py --synthetic  # jitter with tests/test_video.py's
        # numpy pose network (template pose + Gaussian noise, every joint visible)
    .venv/bin/python scripts/bench_video.py --speed [--frames 20] [--precisions fp32,int8]
        # frames/s table: 1 and 5 people, fp32 / int8, mirror pass on/off, detector every
        # frame / every 5th (followed boxes), and the phases of a frame
    .venv/bin/python scripts/bench_video.py --long [--frames 3000]  # memory of a long clip
        # streamed to every export format: peak RSS against the RSS after 100 frames
        # (goal: within +300 MB) and the JSON's size per frame (goal: < 40 kB, one person);
        # with --synthetic the tests' numpy network instead of the default one (the
        # streaming, tracking and export machinery alone, fast)

Prints the load (``uptime``): timings on a shared machine vary with it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poseviewer.estimator import Estimator  # noqa: E402
from poseviewer.paths import resources_dir  # noqa: E402
from poseviewer.result import Fit  # noqa: E402
from poseviewer.video import (  # noqa: E402
    OneEuroParams,
    VideoFileSource,
    estimate_video,
)
from poseviewer.video.pipeline import PoseSmoother  # noqa: E402


def write_clip(path: Path, frames: int, size: tuple[int, int] = (640, 480),
               fps: float = 30.0, loop: int = 0) -> Path:
    w, h = size
    img = cv2.imread(str(resources_dir() / "sample_fullbody.jpg"))
    ph = int(h * 0.85)
    person = cv2.resize(img, (int(img.shape[1] * ph / img.shape[0]), ph),
                        interpolation=cv2.INTER_AREA)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(frames):
        f = np.empty((h, w, 3), np.uint8)
        f[:] = (60, 120, 90)
        x = min(10 + 4 * (i % loop if loop else i), w - person.shape[1])
        f[(h - ph) // 2:(h - ph) // 2 + ph, x:x + person.shape[1]] = person
        wr.write(f)
    wr.release()
    return path


def jitter_3d(poses: np.ndarray) -> float:
    """Mean distance (mm) a root-relative joint moves from one frame to the next."""
    rel = poses - poses[:, :1]
    ok = np.isfinite(rel).all(axis=(1, 2))
    steps = np.linalg.norm(np.diff(rel, axis=0), axis=-1)[ok[1:] & ok[:-1]]
    return float(steps.mean())


def jitter_2d(joints: np.ndarray, drift: np.ndarray) -> float:
    """Mean frame-to-frame joint step (pixels) after removing the clip's known drift."""
    return float(np.linalg.norm(np.diff(joints - drift, axis=0), axis=-1).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--device", default=None)
    ap.add_argument("--scrub", action="store_true",
                    help="also time the viewer's scrubbing over the cached frames (needs a "
                    "display, e.g. xvfb-run)")
    ap.add_argument("--switches", type=int, default=200)
    ap.add_argument("--synthetic", action="store_true",
                    help="only the jitter figures on the tests' clip with their numpy pose "
                    "network (Gaussian joint noise, stable visibility)")
    ap.add_argument("--save", default=None, metavar="NPZ",
                    help="save the raw joints, visibility, times and boxes (for tuning)")
    ap.add_argument("--speed", action="store_true",
                    help="the frames/s table of poseviewer estimate's video path (decode -> "
                    "JSON), 1 and 5 people, mirror pass on/off, detector every frame or "
                    "every 5th; --frames per run")
    ap.add_argument("--precisions", default="fp32,int8",
                    help="--speed: the network precisions to compare (comma-separated)")
    ap.add_argument("--long", action="store_true",
                    help="memory and file size of a long looped clip (--frames, e.g. 3000) "
                    "streamed to every export format")
    args = ap.parse_args()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.synthetic and args.long:  # the streaming machinery alone, with a numpy network
        sys.path.insert(0, str(ROOT / "tests"))
        import test_video as tv

        from poseviewer.lifting import load_pose_model
        from poseviewer.paths import DEFAULT_POSE_MODEL

        bg = np.array((60, 120, 90)[::-1], np.int16)
        return long_clip(Estimator(tv._TemplateBackend(), load_pose_model(DEFAULT_POSE_MODEL),
                                   device="cpu", detector=lambda rgb: _blob(rgb, bg)),
                         args.frames)
    if args.synthetic:
        synthetic_jitter()
        return 0
    est = Estimator.default(device=args.device)
    if args.long:
        return long_clip(est, args.frames)
    if args.speed:
        return speed_table(est, args.frames, tuple(args.precisions.split(",")))
    print(f"device {est.device}; default network {est.backend.info().get('name')}")
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.mp4", args.frames + 1)
        with VideoFileSource(clip) as src:  # warm-up on the first frame
            estimate_video(est, src, max_frames=1)
        t0 = time.perf_counter()
        with VideoFileSource(clip) as src:
            seq = estimate_video(est, src, max_frames=args.frames)
        wall = time.perf_counter() - t0
    n = len(seq)
    phases: dict[str, float] = {}
    for r in seq:
        for k, v in r.timings.items():
            phases[k] = phases.get(k, 0.0) + v / n
    print(f"\n{n} frames of 640x480 in {wall:.2f} s: {n / wall:.2f} frames/s "
          f"(goal >= 10); per frame {1000 * wall / n:.0f} ms")
    print("mean per-frame phases (ms): " + ", ".join(
        f"{k} {1000 * v:.1f}" for k, v in phases.items()))
    print("people per frame:", sorted({len(r.persons) for r in seq}),
          "ids:", seq.track_ids())

    # jitter: the same frames, the 2D joints as read vs smoothed, both lifted the same way
    tid = 0
    rows = [next((p for p in r.persons if p.track_id == tid), None) for r in seq]
    keep = [i for i, p in enumerate(rows) if p is not None]
    raw = np.stack([rows[i].final.raw_joints_2d for i in keep])
    smooth = np.stack([rows[i].final.joints_2d for i in keep])
    vis = np.stack([np.asarray(rows[i].final.visible, bool) for i in keep])
    lifted_raw = Fit.from_lift(est.pose_model.lift(raw, vis)).pose_3d
    lifted_smooth = np.stack([rows[i].final.fit.pose_3d[0] for i in keep])
    drift = (4.0 * np.array(keep, float))[:, None, None] * np.array([1.0, 0.0])
    j_raw, j_sm = jitter_3d(lifted_raw), jitter_3d(lifted_smooth)
    print(f"\njitter over {len(keep)} frames of person {tid} (One Euro {seq.smoothing}):")
    print(f"  2D joints, frame-to-frame step less the drift: raw {jitter_2d(raw, drift):.2f} px"
          f", smoothed {jitter_2d(smooth, drift):.2f} px")
    print(f"  3D joints (root-relative), frame-to-frame step: raw {j_raw:.1f} mm, smoothed "
          f"{j_sm:.1f} mm: {100 * (1 - j_sm / j_raw):.0f}% less")
    # other filter settings, on the same raw joints (filtered and lifted here)
    times = [seq.frame_time(i) for i in keep]
    height = float(rows[keep[0]].box[3] - rows[keep[0]].box[1])
    print("  other One Euro settings on the same joints (min_cutoff Hz, beta):")
    for mc, beta in ((1.5, 2.0), (1.0, 0.5), (0.5, 0.5), (0.5, 0.0), (0.2, 0.0)):
        f = PoseSmoother(OneEuroParams(min_cutoff=mc, beta=beta), height)
        sm = np.stack([f(raw[k], vis[k], rows[i].box, times[k])
                       for k, i in enumerate(keep)])
        lifted = Fit.from_lift(est.pose_model.lift(sm, vis)).pose_3d
        j3 = jitter_3d(lifted)
        print(f"    ({mc}, {beta}): 2D {jitter_2d(sm, drift):.2f} px, 3D {j3:.1f} mm "
              f"({100 * (1 - j3 / j_raw):.0f}% less than raw)")
    if args.save:
        np.savez(args.save, raw=raw, visible=vis, times=np.array(times),
                 boxes=np.stack([rows[i].box for i in keep]))
        print(f"  raw joints saved to {args.save}")
    comp = [int(rows[i].final.fit.component[0]) for i in keep]
    print(f"  best mixture component per frame: {comp}")
    if args.scrub:
        scrub(seq, clip_frames(args.frames), args.switches)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


def write_crowd_clip(path: Path, frames: int, people: int, size: tuple[int, int] = (640, 480),
                     fps: float = 30.0, est: Estimator | None = None) -> Path:
    """``people`` copies of the bundled photo side by side (a 640 x 480 picture), each
    walking right 2 px a frame; with ``est``, several people show only the person's box
    of the photo (as the estimator's detector finds it, 10 % wider), so that five fit."""
    w, h = size
    img = cv2.imread(str(resources_dir() / "sample_fullbody.jpg"))
    if people > 1 and est is not None:
        loaded = est.load_image(str(resources_dir() / "sample_fullbody.jpg"))
        box = est.people(loaded).boxes[0] / loaded.scale
        cx, bw = (box[0] + box[2]) / 2, (box[2] - box[0]) * 1.1
        x0, x1 = int(max(0, cx - bw / 2)), int(min(img.shape[1], cx + bw / 2))
        img = img[:, x0:x1]
    pw = min(int(img.shape[1] * 0.85 * h / img.shape[0]), w // (people + 1))
    ph = int(img.shape[0] * pw / img.shape[1])
    person = cv2.resize(img, (pw, ph), interpolation=cv2.INTER_AREA)
    pw = person.shape[1]
    gap = (w - people * pw) // (people + 1)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(frames):
        f = np.empty((h, w, 3), np.uint8)
        f[:] = (60, 120, 90)
        for k in range(people):
            x = min(gap + k * (pw + gap) + 2 * i, w - pw)
            y = (h - ph) // 2 + ((k % 2) * 2 - 1) * (h - ph) // 8
            f[y:y + ph, x:x + pw] = person
        wr.write(f)
    wr.release()
    return path


def speed_table(est: Estimator, frames: int, precisions: tuple[str, ...] = ("fp32", "int8"),
                phases: bool = True) -> int:
    """Frames per second of ``export_video`` (decode in a thread -> estimate -> track ->
    smooth -> JSON) for 1 and 5 people, fp32 and int8, mirror pass on and off, the detector
    on every frame and on every 5th (followed boxes between), all in this one run; with
    ``phases`` the mean time per frame of each phase of the results (single pass, followed
    boxes)."""
    from poseviewer.video.pipeline import export_video

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for people in (1, 5):
            clip = write_crowd_clip(Path(tmp) / f"p{people}.mp4", frames + 1, people, est=est)
            for precision in precisions:
                est.precision = precision
                for mirror in (True, False):
                    est.flip_test = mirror
                    for k in (1, 5):
                        with VideoFileSource(clip) as src:  # warm-up: one frame
                            export_video(est, src, Path(tmp), "w", ("json",), max_frames=1)
                        seen: dict[str, float] = {}

                        def on_frame(done: int, total: int | None, result,
                                     seen: dict[str, float] = seen) -> None:
                            for key, v in result.timings.items():
                                seen[key] = seen.get(key, 0.0) + v

                        t0 = time.perf_counter()
                        with VideoFileSource(clip) as src:
                            res = export_video(est, src, Path(tmp), "r", ("json",),
                                               max_frames=frames, detect_every=k,
                                               min_track_frames=1, on_frame=on_frame)
                        fps = res.frames / (time.perf_counter() - t0)
                        rows.append((people, precision, mirror, k, fps, res.max_people))
                        print(f"  {people} people, {precision}, mirror "
                              f"{'on ' if mirror else 'off'}, detector every {k}: {fps:.2f} "
                              f"frames/s ({res.max_people} found)", flush=True)
                        if phases and not mirror and k == 5:
                            print("    mean ms a frame: " + ", ".join(
                                f"{key} {1000 * v / max(res.frames, 1):.1f}"
                                for key, v in seen.items()), flush=True)
    est.precision = "fp32"
    base = {p: next(r[4] for r in rows if r[0] == p and r[1] == precisions[0] and r[2]
                    and r[3] == 1) for p in (1, 5)}
    print(f"\n| people | precision | mirror pass | detector | frames/s | x ({precisions[0]}, "
          "mirror, every frame) |")
    print("|---:|---|---|---|---:|---:|")
    for people, precision, mirror, k, fps, _ in rows:
        print(f"| {people} | {precision} | {'on' if mirror else 'off'} | "
              f"{'every frame' if k == 1 else f'every {k}th, followed boxes'} | {fps:.2f} | "
              f"{fps / base[people]:.2f} |")
    print("(640 x 480, decode -> JSON; goals: one person >= 25 frames/s, five >= 8)")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


def _blob(rgb: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The box of what differs from the background colour (``--long --synthetic``)."""
    ys, xs = np.nonzero(np.abs(rgb.astype(np.int16) - bg).sum(axis=2) > 40)
    if not len(xs):
        return np.zeros((0, 4)), np.zeros(0)
    return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float), np.ones(1)


def _rss_mb(key: str = "VmRSS") -> float:
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def long_clip(est: Estimator, frames: int) -> int:
    """A looped 640x480 one-person clip of ``frames`` frames through ``export_video`` (what
    ``poseviewer estimate`` runs) to json, csv, npz, bvh and coco: resident memory after 100
    frames and at its peak, and the size of each file per frame."""
    from poseviewer.video.pipeline import export_video

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        clip = write_clip(Path(tmp) / "long.mp4", frames, loop=100)
        print(f"wrote a {frames}-frame looped clip in {time.perf_counter() - t0:.1f} s")
        marks: dict[int, float] = {}

        def on_frame(done: int, total: int | None, result) -> None:
            if done == 100 or done % 500 == 0:
                marks[done] = _rss_mb()
                print(f"  frame {done}: RSS {marks[done]:.0f} MB "
                      f"({time.perf_counter() - t1:.0f} s)", flush=True)

        t1 = time.perf_counter()
        with VideoFileSource(clip) as src:
            res = export_video(est, src, Path(tmp), "long", ("json", "csv", "npz", "bvh", "coco"),
                               on_frame=on_frame)
        wall = time.perf_counter() - t1
        peak = _rss_mb("VmHWM")
        print(f"\n{res.frames} frames in {wall:.0f} s ({res.frames / wall:.2f} frames/s, "
              "every format written)")
        base = marks.get(100, float("nan"))
        print(f"RSS after 100 frames {base:.0f} MB; peak RSS {peak:.0f} MB: "
              f"+{peak - base:.0f} MB (goal <= +300 MB)")
        for f in res.files:
            kb = f.stat().st_size / 1000.0 / res.frames
            goal = " (goal < 40 kB, one person)" if f.suffix == ".json" and \
                not f.name.endswith(".coco.json") else ""
            print(f"  {f.name}: {kb:.1f} kB per frame{goal}")
        print("tracks:", res.tracks)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


def synthetic_jitter() -> None:
    """3D jitter with and without smoothing on the tests' clip and numpy pose network."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_video as tv

    from poseviewer.lifting import load_pose_model
    from poseviewer.paths import DEFAULT_POSE_MODEL

    with tempfile.TemporaryDirectory() as tmp:
        clip = tv.write_clip(Path(tmp) / "clip.mp4", tv._frames())
        for noise in (0.15, 0.4):
            est = Estimator(tv._TemplateBackend(noise), load_pose_model(DEFAULT_POSE_MODEL),
                            device="cpu", detector=tv._detector)
            with VideoFileSource(clip) as src:
                seq = estimate_video(est, src)
            raw = np.stack([r.persons[0].final.raw_joints_2d for r in seq])
            a = jitter_3d(Fit.from_lift(est.pose_model.lift(
                raw, np.ones(raw.shape[:2], bool))).pose_3d)
            b = jitter_3d(np.stack([r.persons[0].final.fit.pose_3d[0] for r in seq]))
            print(f"tests' clip, numpy network, joint noise {noise} map px "
                  f"({noise * 4 * 200 / 64:.1f} image px): 3D jitter raw {a:.1f} mm, smoothed "
                  f"{b:.1f} mm ({100 * (1 - b / a):.0f}% less)")


def clip_frames(n: int) -> list[np.ndarray]:
    """The clip's frames again (decoded), for the viewer's cache."""
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.mp4", n)
        with VideoFileSource(clip) as src:
            return [f.rgb for f in iter(src.read, None)]


def scrub(seq, frames: list[np.ndarray], switches: int) -> None:
    """Time frame switches in the real window over an estimated, cached sequence: each
    switch sets the frame and lets Qt repaint every panel (image, maps, 3D)."""
    from PySide6.QtWidgets import QApplication

    from poseviewer.app import configure
    from poseviewer.app.main_window import MainWindow
    from poseviewer.app.video import VideoJob

    configure()
    app = QApplication.instance() or QApplication([])
    win = MainWindow(estimator_factory=lambda: None)
    win.resize(1400, 860)
    win.show()
    app.processEvents()
    panel = win.video_panel
    panel.job = VideoJob(1, "bench", frames=dict(enumerate(frames[:len(seq)])),
                         ready=set(range(len(seq))))
    panel.sequence = seq
    win.state.set_sequence(seq)
    panel.slider.setRange(0, len(seq) - 1)
    rng = np.random.default_rng(0)
    order = rng.integers(0, len(seq), switches)
    times = []
    for i in order:
        t0 = time.perf_counter()
        panel.show_frame(int(i))
        app.processEvents()
        times.append(time.perf_counter() - t0)
    ms = 1000 * np.array(times)
    print(f"\nviewer scrubbing over {len(seq)} cached frames ({switches} random switches, "
          f"window 1400x860, {app.platformName()}): median {np.median(ms):.1f} ms, "
          f"p95 {np.percentile(ms, 95):.1f} ms")
    win.shutdown(30000)
    win.close()


if __name__ == "__main__":
    raise SystemExit(main())

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
        [--fast-only] [--repeats R]
        # frames/s table: 1 and 5 people, fp32 / int8, mirror pass on/off, detector every
        # frame / every 5th (followed boxes), and the fast rows: single pass, the network
        # stopped after stage 1 or not, detector every 5th / 10th; the phases of a frame
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
    ap.add_argument("--fast-only", action="store_true",
                    help="--speed: only the fast rows (single pass, fp32, all stages or the "
                    "first, detector every 5th or 10th), not the mirror/precision grid")
    ap.add_argument("--threads", type=int, default=None,
                    help="--speed: torch threads for the network and the person detector "
                    "(default: torch's and DETECTOR_THREADS); 1 makes the CPU time a "
                    "frame a measure of the work, less skewed by a shared machine")
    ap.add_argument("--repeats", type=int, default=1,
                    help="--speed: run every row this many times, interleaved; keep the best")
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
        if args.threads is not None:
            import torch

            from poseviewer.detect import load_detector

            torch.set_num_threads(args.threads)
            load_detector().threads = args.threads
        print(f"torch threads {__import__('torch').get_num_threads()}")
        return speed_table(est, args.frames, tuple(args.precisions.split(",")),
                           grid=not args.fast_only, repeats=args.repeats)
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


#: The rows ``--speed`` adds to its grid: single pass, fp32, the network stopped after
#: stage 1 or not, the detector every 5th or 10th frame (``--fast-only``: these alone, with
#: the grid's fastest row, every-5th with all stages, as their baseline).
FAST_ROWS = ((None, 5), (None, 10), (1, 5), (1, 10))


def speed_rows(precisions: tuple[str, ...], grid: bool = True
               ) -> list[tuple[int, str, bool, int, int | None]]:
    """(people, precision, mirror pass, detector every k, stages) of each ``--speed`` row:
    the grid (1 and 5 people x precision x mirror pass x detector every frame / every
    5th, all stages) unless not ``grid``, then the fast rows (:data:`FAST_ROWS`, fp32,
    single pass; int8 with stage 1 and every 10th as well when int8 is compared)."""
    rows: list[tuple[int, str, bool, int, int | None]] = []
    for people in (1, 5):
        if grid:
            rows += [(people, p, m, k, None) for p in precisions for m in (True, False)
                     for k in (1, 5)]
        else:
            rows.append((people, "fp32", False, 5, None))
        rows += [(people, "fp32", False, k, st) for st, k in FAST_ROWS
                 if (people, "fp32", False, k, st) not in rows]
        if "int8" in precisions:
            rows.append((people, "int8", False, 10, 1))
    return rows


def speed_table(est: Estimator, frames: int, precisions: tuple[str, ...] = ("fp32", "int8"),
                grid: bool = True, repeats: int = 1) -> int:
    """Frames per second of ``export_video`` (decode in a thread -> estimate -> track ->
    smooth -> JSON) for each of :func:`speed_rows` (1 and 5 people, fp32 / int8, mirror
    pass on / off, the detector on every frame or every k-th (followed boxes between),
    all stages or only the first), all in this one run, and the mean time per frame of
    each phase of the single-pass rows with followed boxes (``wall``: the frame's share of
    the run; ``outside``: wall - the estimator's total: tracking, smoothing and the
    re-lifting of the smoothed joints, the JSON, waiting for the decoder). ``repeats``:
    every row run that many times, the rows interleaved, the best kept (the machine's
    load counts less)."""
    from poseviewer.video.pipeline import export_video

    rows = speed_rows(precisions, grid)
    best: dict[tuple, tuple[float, dict[str, float], int]] = {}
    least_cpu: dict[tuple, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clips = {people: write_crowd_clip(Path(tmp) / f"p{people}.mp4", frames + 1, people,
                                          est=est) for people in (1, 5)}
        for rep in range(repeats):
            for row in rows:
                people, precision, mirror, k, stages = row
                est.precision = precision
                est.flip_test = mirror
                est.stages = stages
                with VideoFileSource(clips[people]) as src:  # warm-up: one frame
                    export_video(est, src, Path(tmp), "w", ("json",), max_frames=1)
                seen: dict[str, float] = {"detector frames": 0.0}

                def on_frame(done: int, total: int | None, result,
                             seen: dict[str, float] = seen) -> None:
                    for key, v in result.timings.items():
                        seen[key] = seen.get(key, 0.0) + v
                    seen["detector frames"] += any(p.source != "tracked"
                                                   for p in result.persons)

                t0, c0 = time.perf_counter(), time.process_time()
                with VideoFileSource(clips[people]) as src:
                    res = export_video(est, src, Path(tmp), "r", ("json",),
                                       max_frames=frames, detect_every=k,
                                       min_track_frames=1, on_frame=on_frame)
                wall = time.perf_counter() - t0
                fps = res.frames / wall
                n = max(res.frames, 1)
                cpu_ms = 1000 * (time.process_time() - c0) / n
                runs = int(seen.pop("detector frames"))
                ms = {key: 1000 * v / n for key, v in seen.items()}
                ms["wall"] = 1000 * wall / n
                ms["outside"] = ms["wall"] - ms.get("total", 0.0)
                print(f"  [{rep + 1}/{repeats}] {people} people, {precision}, mirror "
                      f"{'on ' if mirror else 'off'}, stages {stages or 'all'}, detector "
                      f"every {k}: {fps:.2f} frames/s, CPU {cpu_ms:.0f} ms a frame "
                      f"({res.max_people} found; the detector on {runs} of {res.frames} "
                      "frames)", flush=True)
                if row not in best or fps > best[row][0]:
                    best[row] = (fps, ms, runs)
                if row not in least_cpu or cpu_ms < least_cpu[row]:
                    least_cpu[row] = cpu_ms
    est.precision, est.flip_test, est.stages = "fp32", True, None
    first = {p: next(r for r in rows if r[0] == p) for p in (1, 5)}
    base = {p: best[first[p]][0] for p in (1, 5)}
    base_cpu = {p: least_cpu[first[p]] for p in (1, 5)}
    print(f"\nbest of {repeats} run(s) per row; x: against the first row of the same people "
          "count" + (" (fp32, mirror, every frame)" if grid else
                     f" ({first[1][1]}, single pass, every {first[1][3]}th, all stages)"))
    print("CPU ms: the process's CPU time a frame (all its threads; the least of the runs), "
          "x CPU: the first row's over this row's")
    print("\n| people | precision | mirror pass | stages | detector | frames/s | x | CPU ms "
          "a frame | x CPU |")
    print("|---:|---|---|---|---|---:|---:|---:|---:|")
    for row in rows:
        people, precision, mirror, k, stages = row
        fps, cpu = best[row][0], least_cpu[row]
        det = "every frame" if k == 1 else f"every {k}th, followed boxes"
        print(f"| {people} | {precision} | {'on' if mirror else 'off'} | "
              f"{'all' if stages is None else f'first {stages}'} | {det} | {fps:.2f} | "
              f"{fps / base[people]:.2f} | {cpu:.0f} | {base_cpu[people] / cpu:.2f} |")
    print("\nmean ms a frame (the best run of each single-pass row with followed boxes):")
    keys = ("detect", "preprocess", "cnn", "lift", "fusion", "read", "results", "total",
            "outside", "wall")
    print("| people | precision | stages | detector (frames it ran) | " + " | ".join(keys) + " |")
    print("|---:|---|---|---|" + "---:|" * len(keys))
    for row in rows:
        people, precision, mirror, k, stages = row
        if mirror or k == 1:
            continue
        ms, runs = best[row][1], best[row][2]
        print(f"| {people} | {precision} | {'all' if stages is None else stages} | every {k} "
              f"({runs} of {frames}) | "
              + " | ".join(f"{ms.get(key, 0.0):.1f}" for key in keys) + " |")
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

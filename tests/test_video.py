"""Video (issue 12): frame sources and their errors, people ids over time, One Euro
smoothing, the per-frame pipeline and the exports with a frame axis, checked on a clip the
test writes itself (a photo moving across a background) and read back by independent
readers (the json module, a small BVH parser written here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from poseviewer.paths import DEFAULT_POSE_MODEL, resources_dir
from poseviewer.skeleton import CPM14, H36M17

FPS = 25.0
N_FRAMES = 30
W, H = 320, 240
BG = (60, 120, 90)  # BGR of the background


# ---- the clip ------------------------------------------------------------------------------
def _person() -> np.ndarray:
    img = cv2.imread(str(resources_dir() / "sample_fullbody.jpg"))
    s = 200 / img.shape[0]
    return cv2.resize(img, (int(round(img.shape[1] * s)), 200), interpolation=cv2.INTER_AREA)


def _frames(n: int = N_FRAMES, two: bool = False, step: int = 4) -> list[np.ndarray]:
    """BGR frames: the photo moving right ``step`` px a frame (a second copy standing
    still at the right edge)."""
    person = _person()
    out = []
    for i in range(n):
        f = np.empty((H, W, 3), np.uint8)
        f[:] = BG
        x = 4 + step * i
        f[20:220, x:x + person.shape[1]] = person
        if two:
            f[20:220, W - person.shape[1] - 2:W - 2] = person
        out.append(f)
    return out


def write_clip(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    assert wr.isOpened(), "OpenCV cannot write mp4v here"
    for f in frames:
        wr.write(f)
    wr.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", _frames())


# ---- a fast estimator: a numpy pose network and a background-difference detector --------
_TEMPLATE = np.array([  # a standing person facing the camera, crop fractions (x, y)
    (0.50, 0.08), (0.50, 0.20), (0.40, 0.22), (0.36, 0.36), (0.34, 0.50), (0.60, 0.22),
    (0.64, 0.36), (0.66, 0.50), (0.44, 0.52), (0.43, 0.70), (0.43, 0.88), (0.56, 0.52),
    (0.57, 0.70), (0.57, 0.88)])


class _TemplateBackend:
    """A PoseBackend in numpy: the template pose in every crop plus seeded noise (map px)."""

    def __init__(self, noise: float = 0.15) -> None:
        from poseviewer.cnn.backend import CropSpec

        self.skeleton = CPM14
        self.input_size = 64
        self.num_stages = 2
        self.joint_reading = "grid"
        self.map_to_crop = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
        self.input_spec = CropSpec(input_size=64, box_fill=1.0)
        self.lifts = False
        self.noise = noise
        self.calls = 0

    def forward(self, crops, on_stage=None, cancel=None):
        from poseviewer.cnn.backend import StageMaps

        n = len(crops)
        rng = np.random.default_rng(self.calls)
        self.calls += 1
        xy = _TEMPLATE * 16 + rng.normal(0.0, self.noise, (n, 14, 2))
        maps = np.zeros((n, 14, 16, 16), np.float32)
        out = []
        for t in range(self.num_stages):
            out.append(StageMaps(cnn=maps, fused=maps, projected=None, joints=xy.copy(),
                                 confidence=np.ones((n, 14)), visible=np.ones((n, 14), bool)))
            if on_stage is not None:
                on_stage(t, self.num_stages)
        return out

    def info(self):
        return {"name": "template"}


def _detector(rgb: np.ndarray):
    """Boxes of the regions that differ from the background colour."""
    bg = np.array(BG[::-1], np.int16)
    mask = (np.abs(rgb.astype(np.int16) - bg).sum(axis=2) > 40).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    boxes = [[x, y, x + w, y + h] for x, y, w, h, a in stats[1:n] if a > 500]
    return np.array(boxes, float).reshape(-1, 4), np.ones(len(boxes))


@pytest.fixture(scope="module")
def estimator():
    from poseviewer.estimator import Estimator
    from poseviewer.lifting import load_pose_model

    return Estimator(_TemplateBackend(), load_pose_model(DEFAULT_POSE_MODEL), device="cpu",
                     detector=_detector)


@pytest.fixture(scope="module")
def seq(estimator, clip):
    from poseviewer.video import VideoFileSource, estimate_video

    with VideoFileSource(clip) as src:
        return estimate_video(estimator, src)


# ---- an independent BVH reader -------------------------------------------------------------
def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return {"X": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "Y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "Z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def read_bvh(text: str) -> tuple[dict[str, np.ndarray], float, int]:
    """Joint positions per frame ({name: (F, 3)}), the frame time, the frame count."""
    tokens = text.split()
    joints = []  # (name, parent index, offset, channels)
    stack: list[int] = []
    i = 0
    while tokens[i] != "MOTION":
        tok = tokens[i]
        if tok in ("ROOT", "JOINT"):
            joints.append([tokens[i + 1], stack[-1] if stack else -1, None, []])
            i += 2
        elif tok == "End":
            joints.append(["end", stack[-1], None, []])
            i += 2
        elif tok == "{":
            stack.append(len(joints) - 1)
            i += 1
        elif tok == "}":
            stack.pop()
            i += 1
        elif tok == "OFFSET":
            joints[stack[-1]][2] = np.array([float(v) for v in tokens[i + 1:i + 4]])
            i += 4
        elif tok == "CHANNELS":
            k = int(tokens[i + 1])
            joints[stack[-1]][3] = tokens[i + 2:i + 2 + k]
            i += 2 + k
        else:
            i += 1
    n = int(tokens[i + 2])
    ft = float(tokens[i + 5])
    vals = np.array([float(v) for v in tokens[i + 6:]]).reshape(n, -1)
    out: dict[str, list] = {j[0]: [] for j in joints if j[0] != "end"}
    for f in range(n):
        col = 0
        rot, pos = [], []
        for name, parent, off, chans in joints:
            r = np.eye(3)
            p = off.copy()
            for c in chans:
                v = vals[f, col]
                col += 1
                if c.endswith("position"):
                    p[{"X": 0, "Y": 1, "Z": 2}[c[0]]] += v
                else:
                    r = r @ _rot(c[0], v)
            if parent >= 0:
                p = pos[parent] + rot[parent] @ p
                r = rot[parent] @ r
            rot.append(r)
            pos.append(p)
            if name != "end":
                out[name].append(p)
    return {k: np.array(v) for k, v in out.items()}, ft, n


TO_BVH = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


# ---- sources and their errors ----------------------------------------------------------------
def test_video_file_source_frames_and_times(clip) -> None:
    from poseviewer.video import VideoFileSource, iter_frames

    with VideoFileSource(clip) as src:
        assert src.fps == pytest.approx(FPS) and src.frame_count == N_FRAMES
        assert src.size == (W, H) and not src.live
        frames = list(iter_frames(src))
    assert [f.index for f in frames] == list(range(N_FRAMES))
    np.testing.assert_allclose([f.time for f in frames], np.arange(N_FRAMES) / FPS, atol=1e-3)
    assert frames[0].rgb.shape == (H, W, 3) and frames[0].rgb.dtype == np.uint8
    # RGB order: the background pixel is BG reversed (lossy codec: within a few levels)
    np.testing.assert_allclose(frames[3].rgb[2, -3], BG[::-1], atol=6)
    with VideoFileSource(clip) as src:
        some = list(iter_frames(src, every=7, max_frames=3))
    assert [f.index for f in some] == [0, 7, 14]
    np.testing.assert_allclose([f.time for f in some], [0, 7 / FPS, 14 / FPS], atol=1e-3)


def test_bad_videos_give_clear_errors(clip, tmp_path) -> None:
    from poseviewer.video import VideoError, VideoFileSource

    with pytest.raises(VideoError, match="not found"):
        VideoFileSource(tmp_path / "absent.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        VideoFileSource(tmp_path / "empty.mp4")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(20000))
    with pytest.raises(VideoError, match="cannot open|no frames"):
        VideoFileSource(tmp_path / "noise.mp4")
    data = clip.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) // 2])  # mp4v: index at the end
    with pytest.raises(VideoError, match="damaged or truncated"):
        VideoFileSource(tmp_path / "cut.mp4")
    zero = write_clip(tmp_path / "zero.mp4", [])  # a container without a frame
    with pytest.raises(VideoError, match="empty|no frames|cannot open"):
        VideoFileSource(zero)


def test_truncated_avi_reads_what_it_holds_and_says_so(tmp_path) -> None:
    from poseviewer.video import VideoFileSource, iter_frames

    path = tmp_path / "clip.avi"
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    for f in _frames(12):
        wr.write(f)
    wr.release()
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:len(data) * 6 // 10])
    try:
        src = VideoFileSource(cut)
    except Exception as exc:  # some FFmpeg builds refuse the file outright: also clear
        assert "damaged or truncated" in str(exc) or "no frames" in str(exc)
        return
    with src:
        frames = list(iter_frames(src))
        assert 0 < len(frames) < 12
        if src.frame_count:  # the header announced 12 frames
            assert any("truncated" in m for m in src.messages)


class _FakeCapture:
    def __init__(self, opened: bool, frames: int) -> None:
        self.opened, self.frames, self.released = opened, frames, False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def read(self):
        if self.frames <= 0:
            return False, None
        self.frames -= 1
        return True, np.zeros((40, 60, 3), np.uint8)

    def grab(self) -> bool:
        return self.read()[0]

    def get(self, prop: int) -> float:
        return 30.0

    def release(self) -> None:
        self.released = True


def test_camera_absent_busy_and_working() -> None:
    from poseviewer.video import CameraSource, VideoError

    caps: list[_FakeCapture] = []

    def opener(opened: bool, frames: int):
        def make(index: int) -> _FakeCapture:
            caps.append(_FakeCapture(opened, frames))
            return caps[-1]
        return make

    with pytest.raises(VideoError, match="no camera 3: it is absent"):
        CameraSource(3, opener=opener(False, 0))
    assert caps[-1].released
    with pytest.raises(VideoError, match="busy"):
        CameraSource(0, opener=opener(True, 0))
    assert caps[-1].released
    cam = CameraSource(1, opener=opener(True, 3))
    assert cam.live and cam.size == (60, 40) and cam.name == "camera 1"
    got = [cam.read() for _ in range(4)]
    assert [g.index for g in got[:3]] == [0, 1, 2] and got[3] is None
    assert got[0].time <= got[1].time <= got[2].time
    assert any("stopped" in m for m in cam.messages)
    cam.close()
    assert caps[-1].released


# ---- One Euro and the tracker --------------------------------------------------------------
def test_one_euro_hand_computed() -> None:
    from poseviewer.video import OneEuroFilter, OneEuroParams

    p = OneEuroParams(min_cutoff=1.0, beta=0.5, d_cutoff=2.0)
    f = OneEuroFilter(p)
    assert f(np.array([10.0, 5.0]), 0.0).tolist() == [10.0, 5.0]  # first sample passes
    out = f(np.array([12.0, 5.0]), 0.1)
    # by hand: dx = 20; a_d = 1 / (1 + 1 / (2 pi 2) / 0.1); dx_hat = a_d 20;
    # fc = 1 + 0.5 dx_hat; a = 1 / (1 + 1 / (2 pi fc) / 0.1); x = 10 + a (12 - 10)
    a_d = 1 / (1 + (1 / (2 * math.pi * 2.0)) / 0.1)
    fc = 1.0 + 0.5 * a_d * 20.0
    a = 1 / (1 + (1 / (2 * math.pi * fc)) / 0.1)
    assert out[0] == pytest.approx(10 + a * 2.0, rel=1e-12)
    assert out[1] == 5.0  # a constant stays constant
    # a masked value passes unchanged and keeps its state
    out = f(np.array([100.0, 7.0]), 0.2, mask=np.array([False, True]))
    assert out[0] == 100.0 and f.x[0] == pytest.approx(10 + a * 2.0)
    with pytest.raises(ValueError):
        OneEuroParams(min_cutoff=0.0)


def test_tracker_keeps_ids_and_starts_new_ones() -> None:
    from poseviewer.video import Tracker, box_iou

    np.testing.assert_allclose(box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3], [5, 5, 6, 6]]),
                               [[1 / 7, 0.0]])
    t = Tracker(max_missing=1)
    a, b = np.array([0, 0, 10, 20.0]), np.array([30, 0, 40, 20.0])
    assert t.update(np.stack([a, b])) == [0, 1]
    # moved a little, given in the other order: the ids follow the people
    assert t.update(np.stack([b + 1, a + 1])) == [1, 0]
    # person 0 missed for one frame (within max_missing), then back
    assert t.update(np.stack([b + 2])) == [1]
    assert t.update(np.stack([a + 2, b + 3])) == [0, 1]
    # person 1 gone for two frames: a new id when it returns
    t.update(np.stack([a + 3]))
    t.update(np.stack([a + 4]))
    assert t.update(np.stack([a + 5, b + 3])) == [0, 2]
    # two boxes on the same place: the joints decide
    t2 = Tracker()
    box = np.array([[0, 0, 10, 20.0], [0, 0, 10, 20.0]])
    j0, j1 = np.zeros((14, 2)), np.full((14, 2), 8.0)
    assert t2.update(box, np.stack([j0, j1])) == [0, 1]
    assert t2.update(box, np.stack([j1, j0])) == [1, 0]


# ---- the pipeline on the clip ----------------------------------------------------------------
def test_clip_frames_ids_and_smoothing(seq, estimator) -> None:
    assert len(seq) == N_FRAMES and seq.indices == list(range(N_FRAMES))
    np.testing.assert_allclose(seq.times, np.arange(N_FRAMES) / FPS, atol=1e-3)
    assert seq.fps == pytest.approx(FPS) and seq.smoothing["filter"] == "one_euro"
    assert all(len(r.persons) == 1 for r in seq)
    assert {r.persons[0].track_id for r in seq} == {0} and seq.track_ids() == [0]
    # the box follows the photo: 4 px a frame
    x0 = np.array([r.persons[0].box[0] for r in seq])
    np.testing.assert_allclose(np.diff(x0), 4.0, atol=1.5)
    # raw joints kept; smoothed joints lifted; smoothing reduces the frame-to-frame jitter
    raw = np.stack([r.persons[0].final.raw_joints_2d for r in seq])
    sm = np.stack([r.persons[0].final.joints_2d for r in seq])
    np.testing.assert_allclose(sm[0], raw[0], rtol=1e-12)  # the first frame passes
    drift = 4.0 * np.arange(N_FRAMES)[:, None, None] * np.array([1.0, 0.0])
    jitter = lambda a: np.abs(np.diff(np.diff(a - drift, axis=0), axis=0)).mean()  # noqa: E731
    assert jitter(sm) < 0.6 * jitter(raw)
    # ... and of the 3D joints (root-relative), against the raw joints lifted alike
    def jitter_3d(poses):
        rel = poses - poses[:, :1]
        return np.linalg.norm(np.diff(rel, axis=0), axis=-1).mean()

    # (every frame's joints along their own camera ray: the estimator's fov)
    from poseviewer.camera import lift_along_rays

    size = seq[0].image_size
    raw_3d = np.concatenate([lift_along_rays(estimator.pose_model, raw[i:i + 1],
                                             np.ones((1, 14), bool), size, estimator.fov
                                             ).pose_3d for i in range(len(raw))])
    sm_3d = np.stack([r.persons[0].final.fit.pose_3d[0] for r in seq])
    assert jitter_3d(sm_3d) < 0.5 * jitter_3d(raw_3d)
    fit = seq[10].persons[0].final.fit
    want = lift_along_rays(estimator.pose_model, sm[10][None], np.ones((1, 14), bool), size,
                           estimator.fov)
    assert estimator.fov > 0
    np.testing.assert_allclose(fit.pose_3d, want.pose_3d, atol=1e-9)
    # earlier stages as the network gave them
    assert seq[10].persons[0].stages[0].raw_joints_2d is None


def test_two_people_keep_their_ids(estimator, tmp_path) -> None:
    from poseviewer.video import VideoFileSource, estimate_video

    path = write_clip(tmp_path / "two.mp4", _frames(12, two=True, step=1))
    with VideoFileSource(path) as src:
        s = estimate_video(estimator, src, smoothing=None)
    assert all(len(r.persons) == 2 for r in s)
    ids_by_side = {("left" if p.box[0] < W / 2 else "right"): set() for p in s[0].persons}
    for r in s:
        for p in r.persons:
            ids_by_side["left" if p.box[0] < 100 else "right"].add(p.track_id)
    assert ids_by_side == {"left": {0}, "right": {1}} or ids_by_side == {"left": {1},
                                                                         "right": {0}}
    assert all(p.final.raw_joints_2d is None for r in s for p in r.persons)


def test_exports_round_trip_and_bvh_read_back(seq, tmp_path) -> None:
    from poseviewer.export import export_sequence, read_sequence_json, read_sequence_npz

    files = export_sequence(seq, tmp_path, "clip", ["json", "npz", "csv", "bvh", "coco"])
    names = sorted(p.name for p in files)
    assert names == ["clip.coco.json", "clip.csv", "clip.json", "clip.npz",
                     "clip_person0.bvh"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    doc = json.loads((tmp_path / "clip.json").read_text())
    assert doc["schema"] == "poseviewer.sequence" and doc["num_frames"] == N_FRAMES
    assert [f["frame_index"] for f in doc["frames"]] == list(range(N_FRAMES))
    np.testing.assert_allclose([f["frame_time"] for f in doc["frames"]],
                               np.arange(N_FRAMES) / FPS, atol=1e-3)
    assert [f["result"]["persons"][0]["track_id"] for f in doc["frames"]] == [0] * N_FRAMES
    (track,) = doc["tracks"]
    assert track["id"] == 0 and track["frames"] == list(range(N_FRAMES))
    assert track["filled"] == [False] * N_FRAMES
    anim = np.array(track["pose_3d"])
    # the animation: each frame's bone directions (pelvis-relative JSON poses), one set of
    # bone lengths, the root at the origin
    parents = H36M17.parents()
    lengths = np.array(track["bone_lengths"])
    for f, fr in enumerate(doc["frames"]):
        pose = np.array(fr["result"]["persons"][0]["stages"][-1]["fit"]["pose_3d"])
        assert np.abs(pose[0]).max() < 1e-9  # exported root-relative
        for j in range(1, 17):
            u = pose[j] - pose[parents[j]]
            v = anim[f, j] - anim[f, parents[j]]
            np.testing.assert_allclose(v, u / np.linalg.norm(u) * lengths[j], atol=1e-6)
    np.testing.assert_allclose(anim[:, 0], 0.0, atol=1e-12)
    # the BVH, read by the parser above: frame count, frame time, every joint within 1 mm
    joints, ft, n = read_bvh((tmp_path / "clip_person0.bvh").read_text())
    assert n == N_FRAMES and ft == pytest.approx(1 / FPS, abs=1e-5)
    for j, name in enumerate(H36M17.joints):
        ours = joints[name] @ TO_BVH  # BVH frame -> ours (TO_BVH is orthogonal)
        assert np.abs(ours - anim[:, j]).max() < 1.0, name
    # rotations continuous: no wrap or flip (a turn, a half turn) between frames; the
    # largest steps (~35 degrees) are near the ZXY gimbal lock of the hanging arms
    motion = (tmp_path / "clip_person0.bvh").read_text().split("Frame Time:")[1]
    vals = np.array([[float(v) for v in ln.split()] for ln in motion.splitlines()[1:] if ln])
    assert np.abs(np.diff(vals[:, 3:], axis=0)).max() < 90.0
    # JSON and NPZ read back into the same numbers
    for back in (read_sequence_json(tmp_path / "clip.json"),
                 read_sequence_npz(tmp_path / "clip.npz")):
        assert len(back) == N_FRAMES and back.indices == list(range(N_FRAMES))
        np.testing.assert_allclose(back.times, seq.times)
        for a, b in zip(seq, back, strict=True):
            pa, pb = a.root_relative().persons[0], b.persons[0]
            assert pb.track_id == pa.track_id
            np.testing.assert_allclose(pb.final.fit.pose_3d, pa.final.fit.pose_3d, atol=1e-9)
            np.testing.assert_allclose(pb.final.joints_2d, pa.final.joints_2d)
            np.testing.assert_allclose(pb.final.raw_joints_2d, pa.final.raw_joints_2d)
    # CSV: frame columns and the person id on every row
    import csv

    rows = list(csv.DictReader((tmp_path / "clip.csv").open()))
    assert {r["frame"] for r in rows} == {str(i) for i in range(N_FRAMES)}
    assert {r["person_id"] for r in rows} == {"0"}
    r12 = [r for r in rows if r["frame"] == "12" and r["kind"] == "2d" and r["stage"] == "1"]
    assert len(r12) == 14 and float(r12[0]["frame_time"]) == pytest.approx(12 / FPS, abs=1e-3)
    # COCO: one image per frame, annotations with the track id
    coco = json.loads((tmp_path / "clip.coco.json").read_text())
    assert len(coco["images"]) == N_FRAMES
    assert [im["frame_index"] for im in coco["images"]] == list(range(N_FRAMES))
    assert {a["track_id"] for a in coco["annotations"]} == {0}


def test_missing_frames_are_filled_and_marked(seq) -> None:
    import dataclasses

    from poseviewer.export import track_animation
    from poseviewer.result import ResultSequence

    frames = list(seq.frames)
    frames[5] = dataclasses.replace(frames[5], persons=[])  # person not found
    p9 = frames[9].persons[0]
    fit = dataclasses.replace(p9.final.fit, lifted=np.array([False]),
                              pose_3d=np.full_like(p9.final.fit.pose_3d, np.nan))
    frames[9] = dataclasses.replace(frames[9], persons=[dataclasses.replace(
        p9, stages=p9.stages[:-1] + [dataclasses.replace(p9.final, fit=fit)])])
    s = ResultSequence(frames=frames, times=seq.times, indices=seq.indices, fps=seq.fps)
    anim = track_animation(s, 0)
    assert np.flatnonzero(anim.filled).tolist() == [5, 9] and len(anim.frames) == N_FRAMES
    parents = H36M17.parents()
    for f in (5, 9):  # halfway between the neighbours (even frame times), clip's lengths
        a = seq[f - 1].persons[0].pose_3d
        b = seq[f + 1].persons[0].pose_3d
        mid = ((a - a[0]) + (b - b[0])) / 2
        for j in range(1, 17):
            u = mid[j] - mid[parents[j]]
            v = anim.pose_3d[f, j] - anim.pose_3d[f, parents[j]]
            np.testing.assert_allclose(v, u / np.linalg.norm(u) * anim.bone_lengths[j],
                                       atol=1e-6)


def test_continuous_euler_keeps_rotations_and_removes_jumps() -> None:
    from poseviewer.export.bvh import euler_zxy
    from poseviewer.export.video import continuous_euler

    # a full turn about Y (up) in 10-degree steps, with a tilt: the raw angles wrap
    rots = [_rot("Y", a) @ _rot("X", 20.0) for a in np.arange(0, 361, 10.0)]
    raw = np.array([[0, 0, 0, *euler_zxy(r)] for r in rots])
    fixed = continuous_euler(raw)
    assert np.abs(np.diff(raw[:, 3:], axis=0)).max() > 90  # the raw angles jump
    assert np.abs(np.diff(fixed[:, 3:], axis=0)).max() < 15
    for r, (z, x, y) in zip(rots, fixed[:, 3:], strict=True):
        np.testing.assert_allclose(_rot("Z", z) @ _rot("X", x) @ _rot("Y", y), r, atol=1e-9)


def test_variable_frame_rate_and_huge_frames(estimator) -> None:
    from poseviewer.export.video import track_animation
    from poseviewer.video import ArraySource, estimate_video

    rgb = [f[..., ::-1].copy() for f in _frames(6)]
    times = [0.0, 0.04, 0.1, 0.12, 0.2, 0.24]
    s = estimate_video(estimator, ArraySource(rgb, fps=None, times=times))
    assert s.times == times and s.frame_time(2) == 0.1
    assert track_animation(s, 0).frame_step(s) == pytest.approx(0.04)  # median step
    big = estimator.max_pixels
    estimator.max_pixels = 20_000  # analyse a downscaled copy, report original pixels
    try:
        r = estimate_video(estimator, ArraySource(rgb[:2]), smoothing=None)[1]
    finally:
        estimator.max_pixels = big
    assert r.image_size == (W, H) and any("downscaled" in m for m in r.messages)
    assert 4 <= r.persons[0].box[0] <= 12 and r.persons[0].box[2] > 100


def test_empty_source_and_cancel(estimator) -> None:
    from poseviewer.errors import Cancelled, CancelToken
    from poseviewer.video import ArraySource, VideoError, estimate_video

    with pytest.raises(VideoError, match="no frames"):
        ArraySource([])
    token = CancelToken()
    seen = []

    def on_frame(done, total, result):
        seen.append((done, total))
        if done == 2:
            token.cancel()

    rgb = [f[..., ::-1].copy() for f in _frames(5)]
    with pytest.raises(Cancelled):
        estimate_video(estimator, ArraySource(rgb), on_frame=on_frame, cancel=token)
    assert seen == [(1, 5), (2, 5)]
    with pytest.raises(ValueError, match="every"):
        estimate_video(estimator, ArraySource(rgb), every=0)


# ---- live mode ----------------------------------------------------------------------------
class _PacedCamera:
    """A fake live source: frames from arrays at ``fps`` in real time."""

    live = True
    frame_count = None
    name = "fake camera"

    def __init__(self, arrays, fps: float) -> None:
        import time

        self.arrays, self.fps, self.messages = arrays, fps, []
        self.size = (W, H)
        self.i, self.t0, self.closed = 0, time.monotonic(), False

    def read(self):
        import time

        from poseviewer.video import Frame

        if self.i >= len(self.arrays):
            return None
        time.sleep(1.0 / self.fps)
        f = Frame(self.i, time.monotonic() - self.t0, self.arrays[self.i])
        self.i += 1
        return f

    def skip(self, n):
        return 0

    def close(self):
        self.closed = True


def test_live_mode_takes_the_newest_frame_and_drops_the_rest(estimator) -> None:
    import time

    from poseviewer.video import LatestFrame, RateMeter, VideoAnalyzer, run_live

    class Slow:  # the estimator, taking at least 60 ms a frame
        pose_model = estimator.pose_model

        def estimate(self, image, **kw):
            time.sleep(0.06)
            return estimator.estimate(image, **kw)

    rgb = [f[..., ::-1].copy() for f in _frames(40, step=1)]
    cam = _PacedCamera(rgb, fps=200.0)  # a frame every 5 ms
    grabber = LatestFrame(cam)
    seen = []
    stats = run_live(VideoAnalyzer(Slow()), grabber,
                     lambda frame, result, st: seen.append((frame.index, result, st.rate)))
    grabber.stop()
    assert cam.closed and grabber.read == 40
    idx = [i for i, _, _ in seen]
    assert idx == sorted(idx) and len(idx) < 40  # in order, frames were dropped
    assert stats.dropped == 40 - len(idx) and stats.estimated == len(idx)
    assert idx[-1] >= 30  # the last frames shown are recent ones
    assert all(r.persons[0].track_id == 0 for _, r, _ in seen)
    assert 0 < stats.rate < 1 / 0.06 + 1  # no faster than the estimator allows
    # the rate meter on a hand-made clock
    clock = iter([0.0, 0.5, 1.0, 1.5, 1.5]).__next__
    m = RateMeter(window=10.0, clock=clock)
    m.tick(), m.tick(), m.tick(), m.tick()
    assert m.rate == pytest.approx(2.0)


# ---- the command line --------------------------------------------------------------------
def test_cli_mixed_folder(clip, estimator, tmp_path, monkeypatch) -> None:
    import shutil

    from poseviewer.cli import main
    from poseviewer.commands import estimate as estimate_cmd

    monkeypatch.setattr(estimate_cmd, "load_estimator", lambda args: estimator)
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(clip, inputs / "walk.mp4")
    cv2.imwrite(str(inputs / "photo.png"), _frames(1)[0])
    (inputs / "broken.avi").write_bytes(b"RIFF" + bytes(3000))
    out = tmp_path / "out"
    code = main(["estimate", str(inputs), "--out", str(out), "--format",
                 "json,npz,csv,bvh,coco", "--every", "3", "--max-frames", "4",
                 "--no-progress"])
    assert code == 1  # the broken video failed, the rest succeeded
    report = json.loads((out / "report.json").read_text())
    assert report["succeeded"] == 2 and report["failed"] == 1
    assert "broken.avi" in report["failures"][0]["input"]
    assert "VideoError" in report["failures"][0]["error"]
    assert not list(out.glob("broken*"))  # nothing half-written for it
    doc = json.loads((out / "walk.json").read_text())
    assert [f["frame_index"] for f in doc["frames"]] == [0, 3, 6, 9]
    np.testing.assert_allclose([f["frame_time"] for f in doc["frames"]],
                               [0, 3 / FPS, 6 / FPS, 9 / FPS], atol=1e-3)
    _, ft, n = read_bvh((out / "walk_person0.bvh").read_text())
    assert n == 4 and ft == pytest.approx(3 / FPS, abs=1e-5)
    assert (out / "photo.json").is_file() and (out / "walk.coco.json").is_file()
    assert len(json.loads((out / "keypoints_coco.json").read_text())["images"]) == 1
    assert main(["estimate", str(inputs), "--out", str(out), "--every", "0"]) == 2


@pytest.mark.slow
def test_default_network_on_two_frames(clip) -> None:
    from poseviewer.estimator import Estimator
    from poseviewer.video import VideoFileSource, estimate_video

    with VideoFileSource(clip) as src:
        s = estimate_video(Estimator.default(device="cpu"), src, every=2, max_frames=2)
    assert len(s) == 2 and s.indices == [0, 2]
    for r in s:
        assert r.persons and all(p.track_id is not None for p in r.persons)
        assert all(p.final.raw_joints_2d is not None for p in r.persons)


# ---- the viewer ------------------------------------------------------------------------------
@pytest.fixture
def video_window(qtbot, tmp_path, estimator, monkeypatch):
    pytest.importorskip("PySide6")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QMessageBox

    from poseviewer.app import configure
    from poseviewer.app.main_window import MainWindow

    got: list[tuple[str, str]] = []
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(
        lambda parent, title, text, *a, **k: got.append((title, text))))
    configure()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(estimator_factory=lambda: estimator, settings=settings)
    win.messages_seen = got
    qtbot.addWidget(win)
    win.resize(1200, 800)
    with qtbot.waitExposed(win):
        win.show()
    win.activateWindow()
    yield win
    win.shutdown(30000)


@pytest.mark.gui
def test_viewer_timeline_on_a_video(video_window, clip, qtbot) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from poseviewer.app.video import AGAIN, NOT_ESTIMATED

    win, panel = video_window, video_window.video_panel
    panel.open_video(str(clip))
    qtbot.waitUntil(lambda: panel.status_label.text() == f"estimated {N_FRAMES}/{N_FRAMES}",
                    timeout=180000)
    assert panel.slider.maximum() == N_FRAMES - 1 and win.state.num_frames == N_FRAMES
    assert all(NOT_ESTIMATED not in r.messages for r in panel.sequence)
    assert all(AGAIN not in r.messages for r in panel.sequence)  # none estimated twice
    assert [r.persons[0].track_id for r in panel.sequence] == [0] * N_FRAMES
    assert win.state.frame == 0 and win.state.result is panel.sequence[0]
    QTest.keyClick(win, Qt.Key.Key_Period)
    assert win.state.frame == 1 and panel.slider.value() == 1
    assert win.state.result is panel.sequence[1]
    np.testing.assert_array_equal(win.state.image, panel.job.frames[1])
    QTest.keyClick(win, Qt.Key.Key_Comma)
    assert win.state.frame == 0
    panel.slider.setValue(20)  # scrubbing: from the cache, nothing re-estimated
    assert win.state.frame == 20 and win.state.result is panel.sequence[20]
    assert "frame 20" in panel.frame_label.text() and "0.80 s" in panel.frame_label.text()
    win.state.set_stage(0)  # stages work on any frame as on a photo
    assert win.state.stage_result is panel.sequence[20].persons[0].stages[0]
    panel.toggle_play()  # plays to the end at the video's rate, then stops
    qtbot.waitUntil(lambda: win.state.frame == N_FRAMES - 1, timeout=20000)
    qtbot.waitUntil(lambda: not panel.timer.isActive(), timeout=5000)
    assert panel.play_button.text() == "Play"


def test_viewer_video_runs_with_the_windows_estimator_settings(video_window, clip, qtbot,
                                                               estimator) -> None:
    """The Run menu's settings (here the elevation search, on by default) reach the video
    worker's estimator when a video starts, and every frame's result says it ran so."""
    win, panel = video_window, video_window.video_panel
    assert estimator.elevation_search and win.elevation_search is True  # the defaults
    win.elevation_search = False  # as unticking Run > Search camera elevation does
    try:
        panel.open_video(str(clip))
        qtbot.waitUntil(lambda: panel.status_label.text() == f"estimated {N_FRAMES}/{N_FRAMES}",
                        timeout=180000)
        assert not estimator.elevation_search
        assert all(r.model["elevation_search"] is False for r in panel.sequence)
    finally:
        panel.stop()
        estimator.elevation_search = True  # the module's estimator, shared by other tests


@pytest.mark.gui
def test_viewer_one_worker_for_photos_and_videos(qtbot, tmp_path, estimator, clip,
                                                 messages) -> None:
    """Photos and videos share the window's one worker: the models are built once; the
    Run settings reach both; a photo opened while a video is estimated stops the video's
    run; a video's failure comes by the same path as a photo's, titled by its kind."""
    from PySide6.QtCore import QSettings
    from PySide6.QtGui import QAction

    from poseviewer.app import configure
    from poseviewer.app.main_window import MainWindow
    from poseviewer.app.worker import ErrorKind

    made: list[int] = []

    def factory():
        made.append(1)
        return estimator

    configure()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(estimator_factory=factory, settings=settings)
    qtbot.addWidget(win)
    panel = win.video_panel
    assert panel.worker is win.worker
    open_video = win.findChild(QAction, "action_open_video")
    assert open_video in win.file_menu.actions()
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), _frames(1)[0])
    try:
        with qtbot.waitSignal(win.worker.succeeded, timeout=60000):
            win.open_image(photo)
        win.elevation_search = False
        panel.open_video(str(clip))
        qtbot.waitUntil(lambda: panel.job.done >= 2, timeout=60000)
        assert panel.job.settings.elevation_search is False
        with qtbot.waitSignal(win.worker.succeeded, timeout=60000):
            win.open_image(photo)  # the video's run stops, its frames done stay
        qtbot.waitUntil(lambda: "(stopped)" in panel.status_label.text(), timeout=30000)
        assert 2 <= panel.job.done < N_FRAMES
        assert win.state.result.model["elevation_search"] is False
        assert len(made) == 1  # one estimator for the photos and the video
        panel.open_video(str(tmp_path / "missing.mp4"))
        qtbot.waitUntil(lambda: bool(messages), timeout=30000)
        assert messages[-1][0] == "Cannot use this video or camera"
        assert win.last_error[0] is ErrorKind.VIDEO
    finally:
        estimator.elevation_search = True  # the module's estimator, shared by other tests
        win.shutdown(30000)


@pytest.mark.gui
def test_viewer_video_model_error_is_a_model_error(qtbot, tmp_path, clip, messages) -> None:
    """The estimator that cannot be built fails a video as it fails a photo."""
    from PySide6.QtCore import QSettings

    from poseviewer.app import configure
    from poseviewer.app.main_window import MainWindow
    from poseviewer.errors import ModelError

    def broken():
        raise ModelError("no weights here")

    configure()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(estimator_factory=broken, settings=settings)
    qtbot.addWidget(win)
    try:
        win.video_panel.open_video(str(clip))
        qtbot.waitUntil(lambda: bool(messages), timeout=30000)
        assert messages[-1] == ("Cannot load the model", "no weights here")
        assert win.video_panel.status_label.text() == "failed"
    finally:
        win.shutdown(30000)


@pytest.mark.gui
def test_viewer_camera_mode_bad_and_long_videos(video_window, qtbot, tmp_path, clip,
                                               monkeypatch) -> None:
    import poseviewer.app.video as app_video

    win, panel = video_window, video_window.video_panel
    budget = W * H * 3 * 5 + 14 * 16 * 16 * 4 * 2 * 2 * 5  # 5 frames and their maps
    panel.cache_bytes = budget
    panel.open_video(str(clip))
    qtbot.waitUntil(lambda: panel.status_label.text() == f"estimated {N_FRAMES}/{N_FRAMES}",
                    timeout=120000)
    assert panel.num_frames == N_FRAMES  # any length: every frame on the timeline
    assert panel.cached_bytes <= budget and len(panel.job.frames) <= 5
    first = panel.sequence[10]
    assert 10 not in panel.job.frames
    assert first.persons[0].final.cnn_maps.strides == (0, 0, 0)  # maps dropped ...
    assert first.persons[0].track_id == 0 and first.persons[0].final.fit is not None
    panel.show_frame(10)  # ... and estimated again when the user steps back to it
    qtbot.waitUntil(lambda: 10 in panel.job.frames, timeout=60000)
    assert panel.sequence[10] is first and app_video.AGAIN in first.messages
    assert first.persons[0].final.cnn_maps.strides != (0, 0, 0)
    assert first.persons[0].track_id == 0  # the ordered pass's id stays
    err = [np.abs(win.state.image.astype(float) - f[..., ::-1]).mean() for f in _frames()]
    assert int(np.argmin(err)) == 10  # the frame decoded again is frame 10
    assert panel.cached_bytes <= budget
    assert "frame 10: 1 person (ids 0)" in win.statusBar().currentMessage()
    rgb = [f[..., ::-1].copy() for f in _frames(30, step=1)]
    panel.open_camera(lambda: _PacedCamera(rgb, fps=100.0))
    qtbot.waitUntil(lambda: "camera ended" in panel.status_label.text(), timeout=120000)
    st = panel.stats
    assert st.estimated >= 1 and st.read == 30 and st.estimated + st.dropped == 30
    assert "frames/s estimated" in panel.status_label.text()
    assert win.state.result is not None and win.state.result.persons[0].track_id == 0
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all" * 50)
    panel.open_video(str(tmp_path / "bad.mp4"))
    qtbot.waitUntil(lambda: bool(win.messages_seen), timeout=30000)
    title, text = win.messages_seen[-1]
    assert title == "Cannot use this video or camera" and "bad.mp4" in text
    assert win.state.result is not None  # the window keeps what it showed

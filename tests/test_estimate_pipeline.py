"""``poseviewer estimate``'s one pipeline (commands/_options.py, _pipeline.py, _engines.py):
the options parsed once into typed dataclasses, photos and videos of one call each going
their own way (photos through the engine's batches, videos frame by frame) with the same
files from every engine, the report in input order, Ray's image rows packed from
``LoadedImage``'s own field list."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_video import _detector, _frames, _TemplateBackend, write_clip

from poseviewer.cli import main
from poseviewer.paths import DEFAULT_POSE_MODEL


def _parser() -> argparse.ArgumentParser:
    from poseviewer.commands import estimate as estimate_cmd

    p = argparse.ArgumentParser()
    estimate_cmd.add_arguments(p)
    return p


# ---- the options -------------------------------------------------------------------------------
def test_options_parse_every_flag_into_its_field() -> None:
    from poseviewer.commands._options import (
        EngineOptions,
        EstimateOptions,
        EstimatorSettings,
        OutputOptions,
        VideoOptions,
    )

    args = _parser().parse_args([
        "a.jpg", "dir", "--out", "res", "--format", "csv,json,csv,coco", "--frame", "lifting",
        "--save-maps", "--device", "cpu", "--model", "m.mat", "--weights", "w.safetensors",
        "--person-weights", "p.safetensors", "--bf16", "--single-pass", "--no-target-prior",
        "--elevation-search", "--no-progress", "--engine", "ray", "--batch-size", "3",
        "--workers", "0", "--threads", "2", "--resume", "--ray-address", "auto",
        "--num-gpus", "1", "--actors", "5", "--every", "2", "--max-frames", "7",
        "--no-smoothing", "--min-track-frames", "4", "--keep-maps", "--detect-every", "3",
        "--mirror-pass", "--stage-fits", "--fov", "35", "--precision", "int8", "--stages", "2"])
    o = EstimateOptions.from_args(args)
    assert o == EstimateOptions(
        paths=(Path("a.jpg"), Path("dir")),
        output=OutputOptions(out=Path("res"), formats=("csv", "json", "coco"),
                             frame="lifting", save_maps=True),
        estimator=EstimatorSettings(weights="w.safetensors", pose_model="m.mat", device="cpu",
                                    person_weights="p.safetensors", bf16=True,
                                    flip_test=False, target_prior_off=True,
                                    elevation_search=True, fov=35.0,
                                    precision="int8", stages=2),
        engine=EngineOptions(name="ray", batch_size=3, workers=0, threads=2,
                             ray_address="auto", num_gpus=1, actors=5),
        video=VideoOptions(every=2, max_frames=7, smoothing=False, min_track_frames=4,
                           keep_maps=True, detect_every=3, mirror_pass=True, stage_fits=True),
        resume=True, progress=False)
    assert o.output.per_image == ("csv", "json") and o.output.coco
    # the defaults: the command line's, one dataclass each
    d = EstimateOptions.from_args(_parser().parse_args(["a.jpg", "--out", "res"]))
    assert d.output == OutputOptions(out=Path("res"))
    assert d.estimator == EstimatorSettings() and d.engine == EngineOptions()
    assert d.video.every == 1 and d.video.smoothing and not d.video.mirror_pass
    assert d.video.detect_every == 1 and d.estimator.stages is None
    # --realtime: the preset's stages and detector interval; options given explicitly win
    from poseviewer.video.pipeline import REALTIME_DETECT_EVERY, REALTIME_STAGES

    r = EstimateOptions.from_args(_parser().parse_args(["a.jpg", "--out", "res", "--realtime"]))
    assert (r.estimator.stages, r.video.detect_every) == (REALTIME_STAGES, REALTIME_DETECT_EVERY)
    assert (REALTIME_STAGES, REALTIME_DETECT_EVERY) == (1, 10)
    r = EstimateOptions.from_args(_parser().parse_args(
        ["a.jpg", "--out", "res", "--realtime", "--stages", "2", "--detect-every", "3"]))
    assert (r.estimator.stages, r.video.detect_every) == (2, 3)
    assert r.estimator == EstimatorSettings(stages=2) and not r.video.mirror_pass
    assert d.resume is False and d.progress is True
    assert not d.output.coco and d.output.per_image == ("json",)
    # frozen, and plain values all the way down (what a Ray actor gets)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.engine.batch_size = 4  # type: ignore[misc]
    back = json.loads(json.dumps(dataclasses.asdict(o.estimator)))
    assert EstimatorSettings(**back) == o.estimator


@pytest.mark.parametrize("flags, message", [
    (["--format", "json,fbx"], "unknown export format(s) fbx"),
    (["--every", "0"], "--every must be at least 1, not 0"),
    (["--max-frames", "0"], "--max-frames must be at least 1, not 0"),
    (["--detect-every", "0"], "--detect-every must be at least 1, not 0"),
    (["--stages", "0"], "--stages must be at least 1, not 0"),
    (["--realtime", "--mirror-pass"], "--realtime runs a single pass: leave out --mirror-pass"),
    (["--min-track-frames", "0"], "--min-track-frames must be at least 1, not 0"),
    (["--batch-size", "0", "--engine", "plain"], "--batch-size must be at least 1"),
])
def test_bad_options_are_usage_errors_before_anything_runs(flags, message, tmp_path,
                                                           capsys) -> None:
    from poseviewer.commands._options import EstimateOptions, UsageError

    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        EstimateOptions.from_args(_parser().parse_args(["a.jpg", "--out", "o", *flags]))
    out = tmp_path / "out"
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), _frames(1)[0])
    assert main(["estimate", str(photo), "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # checked before the models load and the folder is made


# ---- photos and videos in one call -----------------------------------------------------------
class _Recording:
    """The estimator, recording how it is called: ``estimate_many`` (the photos' batches)
    and ``estimate`` (the video frames)."""

    def __init__(self) -> None:
        from poseviewer.estimator import Estimator
        from poseviewer.lifting import load_pose_model

        self.inner = Estimator(_TemplateBackend(noise=0.0),
                               load_pose_model(DEFAULT_POSE_MODEL), device="cpu",
                               detector=_detector)
        self.batches: list[tuple[int, int | None]] = []
        self.frames = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def estimate_many(self, images, batch_size=None, return_exceptions=False):
        self.batches.append((len(images), batch_size))
        return self.inner.estimate_many(images, batch_size=batch_size,
                                        return_exceptions=return_exceptions)

    def estimate(self, *a, **k):
        self.frames += 1
        return self.inner.estimate(*a, **k)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Three photos with a video between them and a broken one (input order: a, b, c, d,
    e)."""
    d = tmp_path_factory.mktemp("mixed")
    frames = _frames(6)
    cv2.imwrite(str(d / "a.png"), frames[0])
    write_clip(d / "b.mp4", frames)
    cv2.imwrite(str(d / "c.png"), frames[3])
    (d / "d.jpg").write_bytes(b"not a JPEG")
    cv2.imwrite(str(d / "e.png"), frames[5])
    return d


def _run(folder: Path, out: Path, engine: str, monkeypatch, *extra: str) -> tuple[int,
                                                                                _Recording]:
    from poseviewer.commands import estimate as estimate_cmd

    est = _Recording()
    monkeypatch.setattr(estimate_cmd, "load_estimator", lambda settings: est)
    code = main(["estimate", str(folder), "--out", str(out), "--engine", engine, "--format",
                 "json,csv,npz,bvh,coco", "--no-progress", "--workers", "0",
                 "--max-frames", "3", *extra])
    return code, est


def _final_joints(path: Path) -> list[np.ndarray]:
    from poseviewer.export import read_json

    return [np.asarray(p.final.joints_2d) for p in read_json(path).persons]


@pytest.mark.parametrize("engine", ["plain", "local"])
def test_photos_and_videos_each_go_their_own_way(mixed, tmp_path, monkeypatch,
                                                 engine) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    code, est = _run(mixed, tmp_path / "out", engine, monkeypatch, "--batch-size", "2")
    out = tmp_path / "out"
    assert code == 1  # d.jpg is broken; everything else ran
    # the photos went through the engine: plain one unpadded forward per photo, local
    # batches of --batch-size photos (the broken one never reaches the estimator); the
    # video's three frames one by one
    if engine == "plain":
        assert est.batches == [(1, None)] * 3
    else:
        assert est.batches == [(2, 2), (1, 2)]  # a, c | d (failed to decode), e
    assert est.frames == 3
    report = json.loads((out / "report.json").read_text())
    # the report lists the inputs in their order, whichever way each went
    assert [Path(r["input"]).name for r in report["results"]] == ["a.png", "b.mp4", "c.png",
                                                                  "e.png"]
    assert [Path(r["input"]).name for r in report["failures"]] == ["d.jpg"]
    video = report["results"][1]
    assert video["frames"] == 3 and "3 frames" in video["messages"]
    # the photos' table and COCO file hold the photos only; the video has its own files
    table = pq.read_table(out / "poses.parquet").to_pylist()
    assert sorted({r["stem"] for r in table}) == ["a", "c", "e"]
    coco = json.loads((out / "keypoints_coco.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "c.png", "e.png"]
    doc = json.loads((out / "b.json").read_text())
    assert [f["frame_index"] for f in doc["frames"]] == [0, 1, 2]
    for row in table:
        np.testing.assert_array_equal(np.array(row["joints_2d"]),
                                      _final_joints(out / f"{row['stem']}.json")[row["person"]])


@pytest.fixture(scope="module")
def engines_out(mixed, tmp_path_factory) -> dict[str, Path]:
    """The mixed folder through plain and local (the same fixed-template estimator)."""
    mp = pytest.MonkeyPatch()
    outs = {}
    try:
        for engine in ("plain", "local"):
            outs[engine] = tmp_path_factory.mktemp(engine) / "out"
            assert _run(mixed, outs[engine], engine, mp)[0] == 1
    finally:
        mp.undo()
    return outs


def test_every_engine_writes_the_same_files(engines_out) -> None:
    pytest.importorskip("pyarrow")
    names = {e: sorted(p.name for p in out.iterdir()) for e, out in engines_out.items()}
    assert names["plain"] == names["local"]
    expected = {"a.json", "a.csv", "a.npz", "b.json", "b.csv", "b.npz", "b.coco.json",
                "c.json", "e.json", "keypoints_coco.json", "poses.parquet", "report.json"}
    assert expected <= set(names["plain"])
    assert any(n.startswith("b_person") and n.endswith(".bvh") for n in names["plain"])
    # the template network gives the same joints whatever the batch
    for stem in ("a", "c", "e"):
        for ja, jb in zip(_final_joints(engines_out["plain"] / f"{stem}.json"),
                          _final_joints(engines_out["local"] / f"{stem}.json"), strict=True):
            np.testing.assert_array_equal(ja, jb)


def test_resume_skips_photos_with_every_engine(mixed, engines_out, tmp_path,
                                               monkeypatch) -> None:
    out = tmp_path / "out"
    shutil.copytree(engines_out["plain"], out)
    (out / "c.json").unlink()
    code, est = _run(mixed, out, "plain", monkeypatch, "--resume")
    assert code == 1
    assert est.batches == [(1, None)]  # only c (d still fails) ...
    assert est.frames == 0  # ... and the finished video is skipped
    report = json.loads((out / "report.json").read_text())
    skipped = [Path(r["input"]).name for r in report["results"]
               if any("skipped (--resume)" in m for m in r["messages"])]
    assert skipped == ["a.png", "b.mp4", "e.png"]


@pytest.mark.ray
@pytest.mark.slow
def test_ray_takes_the_photos_and_leaves_videos_here(tmp_path) -> None:
    """The real models: ``ray`` writes the files ``local`` writes for one photo and a
    two-frame video (before, a video made ``ray`` refuse the whole call)."""
    pytest.importorskip("ray", reason="needs the [cluster] extra")
    d = tmp_path / "in"
    d.mkdir()
    frames = _frames(2)
    cv2.imwrite(str(d / "a.png"), frames[0])
    write_clip(d / "b.mp4", frames)
    outs = {}
    for engine in ("local", "ray"):
        outs[engine] = tmp_path / engine
        assert main(["estimate", str(d), "--out", str(outs[engine]), "--engine", engine,
                     "--actors", "1", "--format", "json,bvh", "--no-progress"]) == 0
    assert sorted(p.name for p in outs["ray"].iterdir()) == \
        sorted(p.name for p in outs["local"].iterdir())
    assert (outs["ray"] / "b.json").is_file() and (outs["ray"] / "poses.parquet").is_file()
    for ja, jb in zip(_final_joints(outs["local"] / "a.json"),
                      _final_joints(outs["ray"] / "a.json"), strict=True):
        np.testing.assert_allclose(jb, ja, rtol=0, atol=1e-5)


# ---- Ray's rows ------------------------------------------------------------------------------
def test_packed_rows_follow_the_dataclass_fields() -> None:
    from poseviewer.commands._engines import pack, unpack
    from poseviewer.imageio import LoadedImage

    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img = LoadedImage(rgb, path="x/y.jpg", messages=["downscaled"], scale=0.1 + 0.2,
                      original_size=(70, 50))
    back = unpack(LoadedImage, pack(img))
    np.testing.assert_array_equal(back.rgb, rgb)
    assert back.rgb.dtype == np.uint8 and back.rgb.flags.writeable
    assert (back.path, back.messages, back.scale) == (img.path, img.messages, img.scale)
    assert back.original_size == (70, 50) and isinstance(back.original_size, tuple)

    @dataclasses.dataclass
    class Two:  # a field added to a dataclass travels without touching the codec
        a: np.ndarray
        name: str | None
        b: np.ndarray
        size: tuple[int, int] = (0, 0)

    t = Two(np.arange(6.0).reshape(2, 3), None, np.array([True, False]), (3, 4))
    u = unpack(Two, pack(t))
    np.testing.assert_array_equal(u.a, t.a)
    np.testing.assert_array_equal(u.b, t.b)
    assert u.b.dtype == bool and u.name is None and u.size == (3, 4)

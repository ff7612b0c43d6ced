"""What the batch commands print and write around failures: each FAILED line once, on
stderr; no OpenCV/FFmpeg log lines; one exit-code rule for missing paths; every path in
report.json absolute; no empty poses.parquet; the person weights named as such; the
top-level help's summaries whole."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from poseviewer.cli import COMMANDS, _top_help, main
from poseviewer.commands._engines import has_pyarrow

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    from poseviewer.cnn import LiftingCPM, save_cpm, tiny_test

    torch.manual_seed(0)
    return save_cpm(LiftingCPM(tiny_test(fusion=False, num_stages=2)),
                    tmp_path_factory.mktemp("w") / "tiny.safetensors")


def _photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = (np.random.default_rng(0).random((80, 60, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(path), img)
    return path


def _args(weights: Path) -> list[str]:
    return ["--weights", str(weights), "--device", "cpu", "--no-progress"]


def test_a_missing_path_is_a_usage_error_even_among_good_ones(tmp_path, tiny_weights,
                                                              capsys) -> None:
    good = _photo(tmp_path / "in" / "a.png")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    for extra, why in ((tmp_path / "missing.jpg", "no such file or folder"),
                       (tmp_path / "empty", "folder holds no images or videos")):
        for paths in ([extra], [good, extra]):
            code = main(["estimate", *map(str, paths), "--out", str(out), *_args(tiny_weights)])
            cap = capsys.readouterr()
            assert code == 2
            assert cap.err == f"poseviewer estimate: {extra}: {why}\n" and cap.out == ""
            assert not out.exists()  # nothing ran, nothing was written
    people = tmp_path / "people.json"
    people.write_text("[]")
    for paths in ([tmp_path / "none.json"], [people, tmp_path / "none.json"]):
        assert main(["lift", *map(str, paths), "--out", str(out)]) == 2
        assert capsys.readouterr().err == (f"poseviewer lift: {tmp_path / 'none.json'}: "
                                           "no such file\n")
        assert not out.exists()


@pytest.mark.parametrize("engine", ["plain", "local"])
def test_report_paths_are_absolute_and_failures_printed_once(tmp_path, tiny_weights, capsys,
                                                             monkeypatch, engine) -> None:
    monkeypatch.chdir(tmp_path)
    _photo(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "bad.jpg").write_bytes(b"not a jpeg")
    code = main(["estimate", "in", "--out", "out", "--engine", engine, "--format",
                 "json,coco", *_args(tiny_weights)])
    cap = capsys.readouterr()
    assert code == 1
    bad = str(tmp_path / "in" / "bad.jpg")
    assert cap.err.count("FAILED") == 1 and cap.err.startswith(f"FAILED {bad}: ImageError")
    assert "FAILED" not in cap.out
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [f["input"] for f in doc["failures"]] == [bad]
    (ok,) = doc["results"]
    assert ok["input"] == str(tmp_path / "in" / "a.png")
    assert ok["outputs"] == [str(tmp_path / "out" / "a.json")]
    assert all(os.path.isabs(p) for p in doc["other_outputs"])
    assert str(tmp_path / "out" / "keypoints_coco.json") in doc["other_outputs"]


def test_lift_report_paths_absolute(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Path("people.json").write_text(json.dumps([{"image_id": 7, "keypoints": [1, 2]}]))
    assert main(["lift", "people.json", "--out", "out"]) == 1
    doc = json.loads(Path("out", "report.json").read_text())
    assert doc["failures"][0]["input"] == str(tmp_path / "people.json")
    assert capsys.readouterr().err.count("FAILED") == 1


@pytest.mark.skipif(not has_pyarrow(), reason="the table needs pyarrow")
def test_no_empty_table_when_every_input_failed(tmp_path, tiny_weights, capsys) -> None:
    (tmp_path / "in").mkdir()
    for name in ("a.jpg", "b.png"):
        (tmp_path / "in" / name).write_bytes(b"broken")
    out = tmp_path / "out"
    assert main(["estimate", str(tmp_path / "in"), "--out", str(out),
                 *_args(tiny_weights)]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]
    assert json.loads((out / "report.json").read_text())["other_outputs"] == []
    # one good image: the table is there
    _photo(tmp_path / "in" / "c.png")
    assert main(["estimate", str(tmp_path / "in"), "--out", str(out),
                 *_args(tiny_weights)]) == 1
    assert (out / "poses.parquet").is_file()
    capsys.readouterr()


def test_bad_person_weights_are_named_as_such(tmp_path, tiny_weights, capsys) -> None:
    img = _photo(tmp_path / "a.png")
    junk = tmp_path / "person.safetensors"
    junk.write_bytes(b"\x00" * 64)
    for path, words in ((junk, "cannot read person weights (PersonNet)"),
                        (tmp_path / "nope.safetensors", "person weights (PersonNet) not found")):
        code = main(["estimate", str(img), "--out", str(tmp_path / "out"), "--person-weights",
                     str(path), *_args(tiny_weights)])
        err = capsys.readouterr().err
        assert code == 2 and words in err and "CNN weights" not in err


def test_top_help_gives_each_summary_whole() -> None:
    import importlib

    text = " ".join(_top_help().split())
    for name, module in COMMANDS.items():
        doc = importlib.import_module(f"poseviewer.commands.{module}").__doc__
        first = " ".join(doc.split("\n\n")[0].split())
        sentence = re.split(r"(?<=[.!?])\s", first, maxsplit=1)[0]
        assert sentence.endswith("."), name
        assert f"{name} {sentence}" in text
    assert "plus the time per crop." in text  # eval-2d's, once cut after 'validation'


def test_no_opencv_or_ffmpeg_log_lines(tmp_path, tiny_weights) -> None:
    """A file FFmpeg cannot open: our one FAILED line, none of OpenCV's or FFmpeg's own
    (the control run, with their logging turned back on, shows them)."""
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"garbage")
    cmd = [sys.executable, "-m", "poseviewer.cli", "estimate", str(bad), "--out",
           str(tmp_path / "out"), *_args(tiny_weights)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 1, run.stderr
    assert run.stderr.splitlines() == [f"FAILED {bad}: VideoError: cannot open {bad}: not "
                                       "a video OpenCV's FFmpeg reads, or the file is damaged "
                                       "or truncated"]
    assert "OPENCV" not in run.stdout and "moov" not in run.stdout
    loud = {**env, "OPENCV_LOG_LEVEL": "INFO", "OPENCV_FFMPEG_LOGLEVEL": "16"}
    control = subprocess.run(cmd, capture_output=True, text=True, env=loud, timeout=300)
    assert "moov atom not found" in control.stdout + control.stderr
    assert "[ WARN" in control.stderr

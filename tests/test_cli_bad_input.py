"""The command line with bad input: an unwritable output folder is refused before
any work, a corrupt model leaves no empty output folder, JSON results find their photo from
their own folder, --bf16 without native bf16 says so and runs float32."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import poseviewer.estimator as estimator_mod
from poseviewer.cli import main
from poseviewer.cnn import LiftingCPM, save_cpm, tiny_test
from poseviewer.export import read_json


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny CNN weights and a tiny K = 2 3D model, saved."""
    from poseviewer.lifting import PoseModel3D

    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    w = save_cpm(LiftingCPM(tiny_test(fusion=False)), d / "tiny.safetensors")
    rng = np.random.default_rng(0)
    k, b = 2, 3
    e = np.linalg.qr(rng.normal(size=(k, 51, b)))[0].transpose(0, 2, 1).reshape(k, b, 3, 17)
    m = PoseModel3D(rng.normal(size=(k, 3, 17)) * 100, e, np.ones((k, b + 1)))
    return Path(w), Path(m.save(d / "pose3d.safetensors"))


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = (np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(path), img)
    return path


def _args(models: tuple[Path, Path]) -> list[str]:
    return ["--weights", str(models[0]), "--model", str(models[1]), "--no-progress"]


def _unwritable_folder(tmp_path: Path) -> Path:
    """An existing folder this process cannot create files in."""
    if os.geteuid() != 0:
        d = tmp_path / "read_only"
        d.mkdir()
        d.chmod(0o555)
        return d
    for cand in ("/sys/kernel", "/proc/sys"):  # root: a kernel file system
        if os.path.isdir(cand):
            try:
                fd, name = tempfile.mkstemp(dir=cand)
            except OSError:
                return Path(cand)
            os.close(fd)
            os.unlink(name)
    pytest.skip("no unwritable folder available to this user")


def test_unwritable_output_folder_is_refused_first(models, tmp_path, capsys, monkeypatch):
    loads: list[object] = []
    real_load = estimator_mod.Estimator.load
    monkeypatch.setattr(estimator_mod.Estimator, "load",
                        classmethod(lambda cls, *a, **k: loads.append(a) or real_load(*a, **k)))
    img = _image(tmp_path / "a.png")
    out = _unwritable_folder(tmp_path)
    code = main(["estimate", str(img), "--out", str(out), *_args(models)])
    cap = capsys.readouterr()
    assert code == 2
    assert "cannot write to the output folder: " in cap.err and "Traceback" not in cap.err
    assert loads == []  # refused before loading the models or processing any image
    # a path below a file is no folder either
    (tmp_path / "afile").write_text("x")
    code = main(["estimate", str(img), "--out", str(tmp_path / "afile" / "out"),
                 *_args(models)])
    cap = capsys.readouterr()
    assert code == 2 and "is not a folder" in cap.err and "Traceback" not in cap.err
    (tmp_path / "people.json").write_text("[]")
    code = main(["lift", str(tmp_path / "people.json"), "--out", str(out), "--model",
                 str(models[1])])
    assert code == 2 and "cannot write to the output folder" in capsys.readouterr().err


def test_corrupt_weights_or_model_leave_no_output_folder(models, tmp_path, capsys):
    img = _image(tmp_path / "a.png")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    for flags in (["--weights", str(junk), "--model", str(models[1])],
                  ["--weights", str(models[0]), "--model", str(junk)]):
        out = tmp_path / "out"
        code = main(["estimate", str(img), "--out", str(out), *flags, "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and "cannot start" in err and str(junk) in err
        assert not out.exists(), "an empty output folder was left behind"
    out = tmp_path / "lift_out"
    assert main(["lift", str(tmp_path / "x.json"), "--out", str(out), "--model",
                 str(junk)]) == 2
    assert not out.exists()


def test_json_image_path_resolves_from_the_json_folder(models, tmp_path, monkeypatch):
    work = tmp_path / "work"
    _image(work / "photos" / "a.png")
    monkeypatch.chdir(work)  # paths relative to where the command runs
    assert main(["estimate", "photos/a.png", "--out", "results", "--format", "json,csv",
                 *_args(models)]) == 0
    doc = json.loads((work / "results" / "a.json").read_text())
    assert doc["image"]["path"] == "../photos/a.png"
    rows = list(csv.DictReader((work / "results" / "a.csv").open()))
    assert {r["image"] for r in rows} == {"../photos/a.png"}
    # reopened from elsewhere (another working folder, the folders moved together)
    moved = tmp_path / "elsewhere"
    work.rename(moved)
    monkeypatch.chdir(tmp_path)
    back = read_json(moved / "results" / "a.json")
    assert Path(back.image_path).is_file()
    assert Path(back.image_path).resolve() == (moved / "photos" / "a.png").resolve()


def test_bf16_without_native_support_warns_and_runs_float32(models, tmp_path, capsys,
                                                            monkeypatch):
    img = _image(tmp_path / "a.png")
    monkeypatch.setattr(estimator_mod, "native_bf16", lambda device: False)
    assert main(["estimate", str(img), "--out", str(tmp_path / "out"), "--bf16",
                 *_args(models)]) == 0
    err = capsys.readouterr().err
    assert "no native bfloat16" in err and "float32" in err
    doc = json.loads((tmp_path / "out" / "a.json").read_text())
    assert doc["model"]["bf16"] is False
    assert any("no native bfloat16" in m for m in doc["messages"])
    # where bf16 is native it runs
    monkeypatch.setattr(estimator_mod, "native_bf16", lambda device: True)
    est = estimator_mod.Estimator.load(models[0], models[1], device="cpu", bf16=True)
    assert est.bf16 and not est.notes

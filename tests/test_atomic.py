"""Atomic writes (poseviewer.atomic) and every saver that uses them: normal permissions
(0o666 minus the umask, not mkstemp's 0o600), replace-or-nothing, no temp files left."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from poseviewer.atomic import (
    AtomicWriteError,
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    atomic_write_with,
)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield 0o022
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _tiny_pose_model():
    from poseviewer.lifting import PoseModel3D

    rng = np.random.default_rng(0)
    k, b = 2, 3
    e = np.linalg.qr(rng.normal(size=(k, 51, b)))[0].transpose(0, 2, 1).reshape(k, b, 3, 17)
    return PoseModel3D(rng.normal(size=(k, 3, 17)) * 100, e, np.ones((k, b + 1)))


def test_saved_files_get_normal_permissions(tmp_path: Path, umask_022: int) -> None:
    from poseviewer.cnn.config import tiny_test
    from poseviewer.cnn.lifting_cpm import LiftingCPM
    from poseviewer.cnn.weights import load_cpm, save_cpm

    want = 0o666 & ~umask_022
    written = [
        atomic_write_text(tmp_path / "a.txt", "x"),
        atomic_write_bytes(tmp_path / "b.bin", b"x"),
        atomic_write_with(tmp_path / "c.npz", lambda f: np.savez(f, a=np.arange(3))),
        _tiny_pose_model().save(tmp_path / "pose3d.safetensors"),
    ]
    torch.manual_seed(0)
    net = LiftingCPM(tiny_test(fusion=False))
    written.append(save_cpm(net, tmp_path / "cpm.safetensors"))
    for p in written:
        assert _mode(p) == want, f"{p.name}: {oct(_mode(p))}"
    # the files read back (the safetensors savers now write bytes through atomic_open)
    from poseviewer.lifting import PoseModel3D

    m = PoseModel3D.load(tmp_path / "pose3d.safetensors")
    assert np.array_equal(m.mu, _tiny_pose_model().mu)
    back = load_cpm(tmp_path / "cpm.safetensors")
    for k, v in net.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


def test_umask_077_is_respected(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        p = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert _mode(p) == 0o600


def test_error_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    p = atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_open(p, "w") as fh:
        fh.write("new")
        raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["a.txt"]


def test_errors_name_the_path_and_reason(tmp_path: Path) -> None:
    with pytest.raises(AtomicWriteError, match="missing.*does not exist"):
        atomic_write_text(tmp_path / "missing" / "a.txt", "x")
    with pytest.raises(AtomicWriteError, match="is a folder"):
        atomic_write_text(tmp_path, "x")
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(tmp_path / "a", "a"):
            pass
    assert issubclass(AtomicWriteError, OSError)

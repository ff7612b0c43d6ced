"""The shipped 3D pose model, the train-3d / eval-3d commands, and the evaluation pieces."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.io
from conftest import require_shared
from test_train3d import _random_poses

from poseviewer import eval3d
from poseviewer.cli import main
from poseviewer.lifting import PoseModel3D
from poseviewer.metrics import p_mpjpe
from poseviewer.paths import MODELS_DIR
from poseviewer.skeleton import CPM14, CPM_TO_H36M_SLOTS, H36M17, cpm_to_h36m, h36m_to_cpm

SHIPPED = MODELS_DIR / "pose3d_default.safetensors"


def test_shipped_model_loads_and_is_well_formed() -> None:
    assert SHIPPED.stat().st_size < 100_000
    m = PoseModel3D.load(SHIPPED)
    mu, e, sigma = m.mu, m.e, m.sigma
    assert mu.shape == (3, 3, 17) and e.shape == (3, 25, 3, 17) and sigma.shape == (3, 26)
    np.testing.assert_allclose(mu.sum(axis=-1), 0.0, atol=1e-6)  # zero joint-mean
    j = H36M17.index
    # head above the lower ankle
    height = mu[:, 2, j("head")] - mu[:, 2, [j("right_ankle"), j("left_ankle")]].min(axis=1)
    assert ((height > 800) & (height < 2000)).all(), height
    assert (mu[:, 0, j("right_hip")] > 0).all() and (mu[:, 0, j("left_hip")] < 0).all()
    assert (np.diff(sigma[:, :25], axis=1) >= 0).all()  # variances sorted, decreasing
    assert m.meta["subjects"] == [1, 5, 6, 7, 8] and m.meta["n_components"] == 3
    assert "Human3.6M" in m.meta["licence"]


def test_shipped_model_magnitudes_match_released() -> None:
    """sigma = 1/std in mm: each released component has a counterpart of ours with the
    same mean pose height and sigma entries of the same size (see the model card)."""
    mat = scipy.io.loadmat(require_shared("reference", "lftd", "prob_model_params.mat"))
    rel_mu, rel_sigma = mat["mu"].reshape(3, 3, 17), mat["sigma"]
    m = PoseModel3D.load(SHIPPED)
    mu = m.mu
    # the raw PPCA values (before calibration) are in the metadata
    sigma = 1.0 / np.concatenate(
        [np.array(m.meta["basis_std_mm"]), np.array(m.meta["noise_std_mm"])[:, None]], axis=1)
    np.testing.assert_allclose(m.sigma[:, :25], m.meta["prior_factor"] * sigma[:, :25],
                               rtol=1e-3)
    ankle = mu[:, 2, 3]
    for k in range(3):
        j = int(np.abs(ankle - rel_mu[k, 2, 3]).argmin())
        assert abs(ankle[j] - rel_mu[k, 2, 3]) < 120.0  # same kind of mean pose
        ratio = sigma[j] / rel_sigma[k]
        assert 0.6 < np.median(ratio) < 1.7, ratio
        assert ((ratio > 0.3) & (ratio < 3.0)).all(), ratio


def test_shipped_model_lifts_held_out_poses() -> None:
    poses, actions, subjects = eval3d.load_test_poses(
        require_shared("data", "h36m", "h36m_3d_17j_10hz.npz"), eval3d.EvalConfig(stride=400)
    )
    m = PoseModel3D.load(SHIPPED)
    cfg = eval3d.EvalConfig(stride=400, hidden=(0,), projections=("perspective",))
    res = eval3d.evaluate({"ours": m}, poses, actions, subjects, cfg, progress=False)
    err = res.errors[("ours", "perspective", 0, "P-MPJPE")]
    assert len(err) == len(poses) > 50
    assert np.median(err) < 80.0  # the released model: about 50 mm on this protocol
    assert np.mean(res.errors[("ours", "perspective", 0, "S-MPJPE")]) < 120.0


def test_projection_and_camera_frame_round_trip() -> None:
    """The eval's 2D inputs are the lifting camera's view: x right, depth y, image (X, -Z)."""
    poses = _random_poses(5, seed=1)
    yaw = np.linspace(0, 3, 5)
    cam = eval3d.camera_frame(poses, yaw)
    np.testing.assert_allclose(cam.mean(axis=1), 0.0, atol=1e-9)
    # rotation about z keeps heights and horizontal distances
    np.testing.assert_allclose(cam[..., 2], poses[..., 2] - poses[..., 2].mean(1, keepdims=True))
    cfg = eval3d.EvalConfig()
    ortho = eval3d.project(cam, "orthographic", cfg)
    np.testing.assert_allclose(ortho[..., 0] - 500, cfg.ortho_scale * cam[..., 0])
    np.testing.assert_allclose(ortho[..., 1] - 500, -cfg.ortho_scale * cam[..., 2])
    persp = eval3d.project(cam, "perspective", cfg)
    d = cam[..., 1] + cfg.distance
    np.testing.assert_allclose((persp[..., 0] - 500) * d / cfg.focal, cam[..., 0])
    # H36M -> CPM -> H36M slots round trip (the evaluation uses skeleton.h36m_to_cpm)
    assert eval3d.h36m_to_cpm is h36m_to_cpm
    back = cpm_to_h36m(h36m_to_cpm(poses))
    np.testing.assert_array_equal(back[:, CPM_TO_H36M_SLOTS], poses[:, CPM_TO_H36M_SLOTS])
    # the CPM neck is the thorax, the head top the head
    cpm = h36m_to_cpm(poses)
    np.testing.assert_array_equal(cpm[:, CPM14.index("neck")], poses[:, H36M17.index("thorax")])
    np.testing.assert_array_equal(cpm[:, CPM14.index("head_top")], poses[:, H36M17.index("head")])
    with pytest.raises(ValueError, match="projection"):
        eval3d.project(cam, "fisheye", cfg)


def test_hidden_masks() -> None:
    masks = eval3d.hidden_masks(100, (0, 1, 2, 4), np.random.default_rng(0))
    for c, vis in masks.items():
        assert (vis.sum(axis=1) == 14 - c).all()
    # nested: the joints hidden for 1 are also hidden for 2 and 4
    assert (masks[4] <= masks[2]).all() and (masks[2] <= masks[1]).all()


def test_train_and_eval_commands(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    poses = _random_poses(600, seed=2)
    data = tmp_path / "poses.npz"
    np.savez(data, poses=poses, subject=rng.choice([1, 2], 600), action=np.array(["Walk"] * 600))
    out = tmp_path / "m.safetensors"
    rc = main(["train-3d", "--data", str(data), "--subjects", "1", "-o", str(out),
               "--components", "2", "--basis", "5", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    m = PoseModel3D.load(out)
    assert m.num_components == 2 and m.num_basis == 5
    assert 200 < m.meta["n_poses"] < 400 and m.meta["subjects"] == [1]
    # the model lifts its own kind of poses
    cam = eval3d.camera_frame(poses[:20], np.zeros(20))
    img = h36m_to_cpm(eval3d.project(cam, "orthographic", eval3d.EvalConfig()))
    fit = m.lift(img, np.ones((20, 14), bool))
    assert np.median(p_mpjpe(np.asarray(fit.pose_3d), cam)) < 80.0
    # eval-3d on the synthetic file with both models, writing the Markdown report + plot
    md, png = tmp_path / "r.md", tmp_path / "r.png"
    rc = main(["eval-3d", "--data", str(data), "--subjects", "2", "--stride", "20",
               "--hidden", "0,2", "--model", f"a={out}", "--model", f"b={out}",
               "--markdown", str(md), "--plot", str(png), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    text = md.read_text()
    assert "| Walk |" in text and "P-MPJPE a" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # errors: bad data
    rc = main(["train-3d", "--data", str(tmp_path / "missing.npz"), "-o", str(out)])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_train_command_notes_ignored_subjects(tmp_path, capsys) -> None:
    """--subjects on a file without subject ids: a note, and every pose is used."""
    poses = _random_poses(300, seed=5)
    out = tmp_path / "m.safetensors"
    for name, save in (("p.npz", lambda f: np.savez(f, poses=poses)),
                       ("p.npy", lambda f: np.save(f, poses))):
        save(tmp_path / name)
        args = ["train-3d", "--data", str(tmp_path / name), "-o", str(out), "--components",
                "1", "--basis", "3", "--quiet"]
        assert main([*args, "--subjects", "1,5"]) == 0
        err = capsys.readouterr().err
        assert "--subjects 1,5 ignored" in err and name in err, err
        assert PoseModel3D.load(out).meta["n_poses"] == 300
        assert main([*args, "--subjects", "all"]) == 0
        assert "ignored" not in capsys.readouterr().err


def test_commands_report_unwritable_outputs(tmp_path, capsys) -> None:
    """An output path that can't be written gives 'error: ...' naming it and exit 2,
    not a traceback, and leaves no temp files."""
    poses = _random_poses(300, seed=3)
    data = tmp_path / "poses.npz"
    np.savez(data, poses=poses, subject=np.full(300, 1), action=np.array(["Walk"] * 300))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    bad = blocker / "m.safetensors"
    rc = main(["train-3d", "--data", str(data), "-o", str(bad), "--components", "1",
               "--basis", "3", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("train-3d: error: cannot write the model") and \
        str(blocker) in err, err
    model = tmp_path / "m.safetensors"
    assert main(["train-3d", "--data", str(data), "-o", str(model), "--components", "1",
                 "--basis", "3", "--quiet"]) == 0
    base = ["eval-3d", "--data", str(data), "--subjects", "1", "--stride", "30", "--hidden",
            "0", "--projections", "orthographic", "--model", f"a={model}", "--quiet"]
    for opt in ("--markdown", "--plot"):
        target = tmp_path / "no_such_folder" / "out"
        rc = main([*base, opt, str(target)])
        err = capsys.readouterr().err
        assert rc == 2 and "eval-3d: error: cannot write" in err and str(target) in err, err
        assert "does not exist" in err
    rc = main([*base[:-3], "--model", f"r={tmp_path / 'missing.safetensors'}", "--quiet"])
    assert rc == 2 and "not found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "m.safetensors",
                                                          "poses.npz"]
    # a .MAT suffix in capitals is the released format too (one model loader for all)
    mat = tmp_path / "released.MAT"
    shutil.copyfile(require_shared("reference", "lftd", "prob_model_params.mat"), mat)
    rc = main([*base[:-3], "--model", f"r={mat}", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert "P-MPJPE r" in capsys.readouterr().out


def test_tables_leave_out_poses_that_were_not_lifted() -> None:
    """A NaN error (pose not lifted) is left out of the means, not spread to the whole
    action and the Average, and the bold best ignores it."""
    cfg = eval3d.EvalConfig(hidden=(0,), projections=("orthographic",))
    res = eval3d.EvalResult(cfg, np.array(["Sit", "Sit", "Walk", "Walk"]), np.zeros(4))
    nan = np.nan
    for met in eval3d.METRICS:
        res.errors[("a", "orthographic", 0, met)] = np.array([10.0, nan, 30.0, 50.0])
        res.errors[("b", "orthographic", 0, met)] = np.array([nan, nan, 20.0, 30.0])
    res.not_lifted[("a", "orthographic", 0)] = 1
    res.not_lifted[("b", "orthographic", 0)] = 2
    a = res.per_action("a", "orthographic", 0, "P-MPJPE")
    assert a == {"Sit": 10.0, "Walk": 40.0, "Average": 25.0, "All poses": 30.0}
    b = res.per_action("b", "orthographic", 0, "P-MPJPE")
    assert np.isnan(b["Sit"]) and b["Walk"] == 25.0 and b["Average"] == 25.0
    table = eval3d.action_table(res, "orthographic", 0)
    assert "| Sit | **10.0** | n/a | **10.0** | n/a |" in table
    assert "| Walk | 40.0 | **25.0** | 40.0 | **25.0** |" in table
    summary = eval3d.summary_table(res)
    assert "| orthographic | 0 | **25.0** | **25.0** | **25.0** | **25.0** |" in summary
    report = eval3d.report_markdown(res)
    assert "a orthographic 0 hidden: 1" in report and "b orthographic 0 hidden: 2" in report

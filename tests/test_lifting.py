"""The 3D pose model and the batched lifting against the release's reference vectors,
hand-built least-squares problems and invariances (``../shared/docs/lifting-spec.md``)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poseviewer.lifting import ComponentFits, LiftResult, ModelFileError, PoseModel3D
from poseviewer.lifting.spec import OBS_SLOTS, OBS_SOURCES
from poseviewer.skeleton import H36M17

pytestmark = pytest.mark.shared


def _xy(ref: dict[str, np.ndarray]) -> np.ndarray:
    """The reference inputs are (row, col) = (y, x); our API takes (x, y)."""
    return np.ascontiguousarray(ref["in_pose_2d_yx"][:, :, ::-1])


#: ``lift_method`` values: every reference test runs with the per-pattern operators and
#: with the direct solver.
METHODS = ["operators", "direct"]


@pytest.fixture(scope="module", params=METHODS)
def lifter(request, model):
    """The released model, lifting with one method (operators: always prepared)."""
    m = PoseModel3D(model.mu, model.e, model.sigma)
    m.lift_method = request.param
    m.build_min = 0
    m.elevations = (0.0,)  # the yaw-only fit of the spec (the elevation grid:
    # tests/test_lifting_elevation.py)
    return m


@pytest.fixture(scope="module")
def batch(lifter, ref):
    """One batched call over all 21 reference cases, with intermediates, in the
    release-exact mode (the reference vectors carry the release's capped-refit quirk)."""
    return lifter.lift(_xy(ref), ref["in_visibility"], return_intermediates=True,
                       release_exact=True)


def _close(actual, expected, atol: float, rtol: float = 1e-6) -> None:
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- reference


def test_model_matches_reference_arrays(model, ref):
    _close(model.mu, ref["model_mu"], 0)
    _close(model.e, ref["model_e"], 0)
    _close(model.sigma, ref["model_sigma"], 0)
    assert model.num_components == 3 and model.mu.dtype == np.float64


def test_every_intermediate_matches_reference(batch, ref):
    fit, it = batch
    n = len(ref["case_names"])
    ar = np.arange(n)
    best = ref["out_best_chart"]
    np.testing.assert_array_equal(fit.component, best)
    assert fit.lifted.all()
    _close(it["transformed_xy"], ref["out_transformed_xy"], 0)
    w = ref["out_weights"]
    np.testing.assert_array_equal(it["weights"], w[:, 0] > 0)
    # Invisible slots keep raw pixels in the reference; ours are zeroed: compare visible only.
    _close(it["norm_pose"] * w, ref["out_norm_pose"] * w, 1e-12)
    _close(it["m"], ref["out_norm_m2"], 0)
    comps = fit.components
    _close(comps.residual, ref["out_chart_res"], 1e-12)
    _close(comps.scale, ref["out_chart_scale"], 1e-12)
    _close(comps.score, ref["out_chart_score"], 1e-12)
    _close(it["sincos"], ref["out_chart_r"], 1e-12)
    c, cr = comps.coeffs, ref["out_chart_a"]
    _close(c[..., 3:], cr[..., 3:], 1e-6)
    # c_1 and c_3 are the duplicated x-translation: only their sum is determined tightly.
    _close(c[..., 0] + c[..., 2], cr[..., 0] + cr[..., 2], 1e-5, rtol=1e-5)
    _close(c[..., :3], cr[..., :3], 1e-4, rtol=1e-4)
    for key in ("rec_model", "rec_blend", "rec_renorm"):
        _close(it[key][ar, best], ref["out_" + key], 1e-9)
    pose = fit.pose_3d
    assert pose.shape == (n, 17, 3)
    _close(pose, ref["out_pose_3d"].transpose(0, 2, 1), 1e-3)
    assert np.abs(pose - ref["out_pose_3d"].transpose(0, 2, 1)).max() < 1e-6


def test_scale_cap_quirk_case(batch, ref):
    """G (tilted pose) caps component 0; the quirk puts a_1 - a_3 = -300 (depth shift)."""
    fit, it = batch
    names = list(ref["case_names"])
    g = names.index("G_roll45_mu0")
    assert it["capped"][g].tolist() == [True, False, False]
    assert fit.components.capped[g].tolist() == [True, False, False]
    assert fit.components.scale[g, 0].item() == -0.001
    c = fit.components.coeffs[g, 0]
    assert (c[0] - c[2]).item() * -0.001 == pytest.approx(-300.0, rel=1e-9)
    assert not it["capped"][np.arange(len(names)) != g].any()


def _refit_problem(w, v, mu, e, sigma, theta, target):
    """The capped refit of spec step 3 (scale fixed at -0.001), 28 unknowns, row by row;
    ``target`` is the right-hand side of E_1's prior row (release: -0.003)."""
    a_mat, b = _release_problem(w, v, mu, e, sigma, theta)
    lam = sigma[25]
    vv = np.concatenate([v, v])
    b = b.copy()
    b[:34] -= -0.001 * a_mat[:34, 0]  # w - P (cap mu), weighted like the data
    a_mat = np.delete(np.delete(a_mat, 34, axis=0), 0, axis=1)  # drop a_0 and its row
    b = np.delete(b, 34)
    b[34] = target
    assert np.allclose(a_mat[:34, 0], lam * vv * np.r_[np.ones(17), np.zeros(17)] * (
        math.sin(theta)))
    return a_mat, b


@pytest.mark.parametrize("exact", [True, False])
def test_capped_refit_matches_plain_lstsq(lifter, ref, exact):
    """Case G caps component 0. Its refit, at every angle checked, equals numpy lstsq on
    the hand-built refit system: with the release's -0.003 target (exact) or 0 (default)."""
    g = list(ref["case_names"]).index("G_roll45_mu0")
    fit, it = lifter.lift(_xy(ref)[g : g + 1], ref["in_visibility"][g : g + 1],
                         return_intermediates=True, release_exact=exact)
    assert it["capped"][0].tolist() == [True, False, False]
    w, v = it["norm_pose"][0], it["weights"][0].astype(float)
    got = it["residuals"][0, 0]
    j_best = int(it["angle"][0, 0])
    for j in (0, 25, 61, 99, j_best):
        a_mat, b = _refit_problem(w, v, ref["model_mu"][0], ref["model_e"][0],
                                  ref["model_sigma"][0], 2 * math.pi * j / 100,
                                  -0.003 if exact else 0.0)
        a, *_ = np.linalg.lstsq(a_mat, b, rcond=None)
        assert got[j] == pytest.approx(float(np.sum((a_mat @ a - b) ** 2)), rel=1e-9)
        if j == j_best:
            c = fit.components.coeffs[0, 0] * -0.001
            _close(c[3:], a[3:], 1e-9, rtol=1e-6)
            _close(c[0] + c[2], a[0] + a[2], 1e-6, rtol=1e-6)
    assert j_best == int(np.argmin(got))


def test_default_capped_component_sits_near_the_origin(lifter, ref):
    """Default mode: the capped component of case G is centred like the uncapped ones
    (spec step 5: within about 55 mm of the joint centroid), not 118 m away in depth; the
    release-exact mode keeps the release's output. Both modes differ only in the depth
    translation of that component, by tens of metres (spec step 3)."""
    g = list(ref["case_names"]).index("G_roll45_mu0")
    xy, vis = _xy(ref)[g : g + 1], ref["in_visibility"][g : g + 1]
    default = lifter.lift(xy, vis).components
    exact = lifter.lift(xy, vis, release_exact=True).components
    assert default.capped[0].tolist() == [True, False, False]
    centroid = default.pose_3d[0, 0].mean(0)
    assert np.abs(centroid).max() < 55.0
    far = exact.pose_3d[0, 0].mean(0)
    assert far[1] > 10_000.0  # the reference's +118 m
    _close(exact.pose_3d[0, 0], ref["out_pose_3d"][g].T, 1e-3)
    # Same shape and image-plane rows up to the tiny effect of the 1e-10 prior target.
    d, x = default.pose_3d[0, 0], exact.pose_3d[0, 0]
    _close(d - centroid, x - far, 1e-2)
    _close(d[:, [0, 2]], x[:, [0, 2]], 1e-2)
    # The uncapped components do not depend on the mode at all.
    for name in ("pose_3d", "score", "residual", "yaw", "coeffs"):
        assert np.array_equal(getattr(default, name)[0, 1:], getattr(exact, name)[0, 1:])
    # Attribute and argument agree.
    lifter.release_exact = True
    try:
        assert np.array_equal(lifter.lift(xy, vis).pose_3d, lifter.lift(xy, vis,
                                                                   release_exact=True).pose_3d)
        assert np.array_equal(lifter.lift(xy, vis, release_exact=False).components.pose_3d,
                           default.pose_3d)
    finally:
        lifter.release_exact = False


def test_batch_equals_one_by_one_and_release_batches(lifter, ref, batch):
    fit, _ = batch
    xy, vis = _xy(ref), ref["in_visibility"]
    for i in range(len(xy)):
        one = lifter.lift(xy[i : i + 1], vis[i : i + 1], release_exact=True)
        _close(one.pose_3d[0], fit.pose_3d[i], 1e-9)
        _close(one.components.score[0], fit.components.score[i], 1e-15)
    bi = ref["batch_idx"]
    sub = lifter.lift(xy[bi], vis[bi], release_exact=True)
    _close(sub.pose_3d, ref["batch_out_pose_3d"].transpose(0, 2, 1), 1e-6)
    # Different masks in one batch: per person, not the release's person-0-mask bug.
    qi = ref["quirk_idx"]
    q = lifter.lift(xy[qi], vis[qi], release_exact=True).pose_3d
    _close(q, ref["out_pose_3d"][qi].transpose(0, 2, 1), 1e-6)
    # (Both quirk cases of the file are fully visible, so its quirk batch does not differ;
    # mix masks ourselves: occluded people first, so a person-0 mask would break the rest.)
    mixed = np.array([16, 0, 18, 20, 19, 4])
    lifter.release_exact = True  # the lifter's attribute does the same as the argument
    try:
        got = lifter.lift(xy[mixed], vis[mixed]).pose_3d
    finally:
        lifter.release_exact = False
    _close(got, ref["out_pose_3d"][mixed].transpose(0, 2, 1), 1e-6)


def test_small_and_large_batches_build_the_pose_the_same_way(lifter, ref, batch):
    """Step 5.1 comes from the precomputed rotated basis for small batches and is rotated
    in place for large ones (``fit.GATHER_MAX``): both give the same poses, projections
    and intermediates (capped components included)."""
    from poseviewer.lifting import fit as fit_module

    fit, extra = batch
    xy, vis = _xy(ref), ref["in_visibility"]
    reps = fit_module.GATHER_MAX // (len(xy) * lifter.num_components) + 1
    big, big_extra = lifter.lift(np.tile(xy, (reps, 1, 1)), np.tile(vis, (reps, 1)),
                                 return_intermediates=True, release_exact=True)
    assert len(xy) * reps * lifter.num_components > fit_module.GATHER_MAX
    n = len(xy)
    assert bool(extra["capped"].any())  # the quirk cases are in the reference batch
    for r in range(reps):
        sl = slice(r * n, (r + 1) * n)
        _close(big.components.pose_3d[sl], fit.components.pose_3d, 1e-9)
        _close(big.components.joints_2d[sl], fit.components.joints_2d, 1e-9)
        _close(big_extra["rec_model"][sl], extra["rec_model"], 1e-9)
        assert np.array_equal(big.component[sl], fit.component)


def _release_problem(w, v, mu, e, sigma, theta):
    """The spec's 80 x 29 system for one component and angle, built row by row."""
    big_e = np.zeros((29, 3, 17))
    big_e[0] = mu
    big_e[1, 0] = big_e[3, 0] = 1.0
    big_e[2, 1] = 1.0
    big_e[4:] = e
    s, c = math.sin(theta), math.cos(theta)
    u = np.array([[s, -c, 0], [c, s, 0], [0, 0, 1.0]])
    cam = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    p = (cam @ u.T)[:2]
    lam = sigma[25]
    vv = np.concatenate([v, v])
    data = np.stack([(p @ big_e[i]).reshape(-1) for i in range(29)], 1) * lam * vv[:, None]
    reg = np.diag(np.r_[0.0, 1e-5, 1e-5, 1e-5, 5.2 * sigma[:25]])
    a_mat = np.vstack([data, reg, np.zeros((17, 29))])
    b = np.r_[lam * vv * w.reshape(-1), -0.003, np.zeros(28 + 17)]
    return a_mat, b


def test_every_angle_residual_matches_plain_lstsq(lifter, ref, batch):
    """All 100 angle residuals of every component equal numpy lstsq on the spec's system."""
    _, it = batch
    i = 16  # occluded joints: exercises the masks
    w = it["norm_pose"][i]
    v = it["weights"][i].astype(float)
    got = it["residuals"][i]
    for k in range(3):
        for j in (0, 7, 33, 50, 99, int(it["angle"][i, k])):
            a_mat, b = _release_problem(w, v, ref["model_mu"][k], ref["model_e"][k],
                                        ref["model_sigma"][k], 2 * math.pi * j / 100)
            a, *_ = np.linalg.lstsq(a_mat, b, rcond=None)
            expected = float(np.sum((a_mat @ a - b) ** 2))
            assert got[k, j] == pytest.approx(expected, rel=1e-9, abs=1e-15)
        assert int(it["angle"][i, k]) == int(np.argmin(got[k]))


@pytest.mark.parametrize("exact", [True, False])
def test_projection_reproduces_residual(lifter, batch, ref, exact):
    """Spec: the projected 2D pose reproduces the fit's residual (data + prior terms), in
    both modes of the capped refit (release: E_1's prior row targets -0.003; default: 0)."""
    fit, it = batch if exact else lifter.lift(_xy(ref), ref["in_visibility"],
                                             return_intermediates=True)
    proj = lifter.project(fit)
    _close(proj, fit.components.joints_2d, 1e-9)
    sigma = ref["model_sigma"]
    comps = fit.components
    assert comps.capped.sum() == 1
    for i in range(len(ref["case_names"])):
        w = it["norm_pose"][i].T  # (17, 2)
        vis = it["weights"][i]
        centre, m = fit.centre[i], fit.norm[i].item()
        for k in range(3):
            norm_proj = (proj[i, k] - centre) / m
            lam = sigma[k, 25]
            data = lam**2 * np.sum((norm_proj - w)[vis] ** 2)
            s = comps.scale[i, k]
            a = comps.coeffs[i, k] * s  # undo the division by the scale
            prior = np.sum((5.2 * sigma[k, :25] * a[3:]) ** 2)
            if comps.capped[i, k]:
                target = -0.003 if exact else 0.0
                prior += (1e-5 * a[0] - target) ** 2 + 1e-10 * (a[1] ** 2 + a[2] ** 2)
            else:
                prior += 1e-10 * np.sum(a[:3] ** 2) + 0.003**2
            assert (data + prior) / 2 == pytest.approx(comps.residual[i, k], rel=1e-8)
    # Image-space sanity: the best projection lies near the visible input joints.
    xy = _xy(ref)
    err = np.linalg.norm(fit.joints_2d[:, OBS_SLOTS] - xy[:, OBS_SOURCES], axis=-1)
    assert np.median(err[ref["in_visibility"][:, OBS_SOURCES]]) < 20.0


# ----------------------------------------------------------------------------- invariances


@settings(max_examples=8, deadline=None)
@given(
    tx=st.floats(-2000, 2000), ty=st.floats(-2000, 2000),
    scale=st.floats(0.05, 20.0), case=st.integers(0, 20),
)
def test_translation_and_uniform_scale_leave_3d_unchanged(lifter, ref, tx, ty, scale, case):
    """Step 1 removes the visible mean and divides by m, which scales with the input: the
    normalised w, hence every fit and the 3D pose, are unchanged; the 2D projection moves
    with the input."""
    xy = _xy(ref)[case : case + 1]
    vis = ref["in_visibility"][case : case + 1]
    base = lifter.lift(xy, vis)
    moved = lifter.lift(xy * scale + np.array([tx, ty]), vis)
    _close(moved.pose_3d, base.pose_3d, 1e-6)
    assert moved.component.tolist() == base.component.tolist()
    _close(moved.joints_2d, base.joints_2d * scale + np.array([tx, ty]), 1e-6)


def test_invisible_joints_may_hold_anything(lifter, ref):
    xy, vis = _xy(ref)[16:20].copy(), ref["in_visibility"][16:20]
    base = lifter.lift(xy, vis)
    xy[~vis] = np.nan
    _close(lifter.lift(xy, vis).pose_3d, base.pose_3d, 0)
    xy[~vis] = 1e9
    _close(lifter.lift(xy, vis).pose_3d, base.pose_3d, 0)


def test_too_few_joints_marks_person_not_lifted(lifter, ref):
    xy, vis = _xy(ref)[:3], ref["in_visibility"][:3].copy()
    vis[1] = False
    vis[1, :4] = True  # 4 visible joints: one short
    fit = lifter.lift(xy, vis)
    assert fit.lifted.tolist() == [True, False, True]
    assert np.isnan(fit.pose_3d[1]).all() and np.isnan(fit.joints_2d[1]).all()
    assert np.isnan(fit.components.score[1]).all() and fit.component[1].item() == 0
    for i in (0, 2):
        one = lifter.lift(xy[i : i + 1], vis[i : i + 1])
        _close(fit.pose_3d[i], one.pose_3d[0], 1e-9)
    vis[1, 4] = True  # five is enough
    assert lifter.lift(xy, vis).lifted.all()


def test_visible_joints_on_one_row_mark_person_not_lifted(lifter, ref):
    """Zero height: the lifting's scale (half the height) is undefined; no pose at an
    arbitrary scale, but lifted False like too few joints. Others are unaffected."""
    xy, vis = _xy(ref)[:3].copy(), ref["in_visibility"][:3].copy()
    vis[1] = True
    xy[1, :, 1] = 240.0  # every joint at y = 240 px, x spread out
    xy[1, 1, 1] = np.nan  # an invisible joint elsewhere does not count
    vis[1, 1] = False
    fit = lifter.lift(xy, vis)
    assert fit.lifted.tolist() == [True, False, True]
    assert np.isnan(fit.pose_3d[1]).all() and fit.component[1].item() == 0
    for i in (0, 2):
        one = lifter.lift(xy[i : i + 1], vis[i : i + 1])
        _close(fit.pose_3d[i], one.pose_3d[0], 1e-9)
    xy[1, 5, 1] = 241.0  # one pixel of height is a pose again
    assert lifter.lift(xy, vis).lifted.all()


# ----------------------------------------------------------------------------- result object


def test_result_select_numpy_and_torch_inputs(lifter, ref, batch):
    fit, _ = batch
    assert isinstance(fit, LiftResult) and isinstance(fit.components, ComponentFits)
    assert fit.pose_3d.dtype == np.float64 and fit.component.dtype == np.int64
    n = len(ref["case_names"])
    assert fit.components.pose_3d.shape == (n, 3, 17, 3)
    assert fit.components.joints_2d.shape == (n, 3, 17, 2)
    assert fit.components.coeffs.shape == (n, 3, 28)
    assert fit.joints_2d.shape == (n, 17, 2)
    one = fit[4]
    assert one.pose_3d.shape == (1, 17, 3)
    _close(one.pose_3d[0], fit.pose_3d[4], 0)
    sub = fit.select([2, 5])
    assert isinstance(sub.pose_3d, np.ndarray) and sub.components.score.shape == (2, 3)
    _close(sub.components.score, fit.components.score[[2, 5]], 0)
    _close(lifter.project(sub), fit.components.joints_2d[[2, 5]], 1e-9)
    t = lifter.lift(torch.as_tensor(_xy(ref)[:2]), torch.as_tensor(ref["in_visibility"][:2]))
    _close(t.pose_3d, fit.pose_3d[:2], 1e-9)
    # Best component's pose is the component entry of the full table.
    _close(fit.pose_3d, fit.components.pose_3d[np.arange(n), fit.component], 0)
    # Output frame: fixed total bone size (spec step 5.3).
    p = fit.pose_3d
    bones = np.array(H36M17.bones)
    size = np.sqrt(((p[:, bones[:, 1]] - p[:, bones[:, 0]]) ** 2).sum((1, 2)))
    _close(size, np.full(n, 0.97 * 1174.88312988), 1e-6)


@pytest.mark.parametrize("people", [1, 21])
def test_output_is_numpy_and_as_numpy_changes_nothing(lifter, ref, people):
    """Every field a numpy array; ``as_numpy=True`` (kept for older callers) gives the same
    numbers bit for bit, on both methods, for one person and for a batch; torch inputs
    give the numpy inputs' numbers."""
    xy, vis = _xy(ref)[:people], ref["in_visibility"][:people]
    want = lifter.lift(xy, vis, release_exact=True)
    got = lifter.lift(torch.as_tensor(xy), torch.as_tensor(vis), release_exact=True,
                      as_numpy=True)
    for res, ref_res in ((got, want), (got.components, want.components)):
        for f in dataclasses.fields(res):
            if f.name == "components":
                continue
            x = getattr(res, f.name)
            assert isinstance(x, np.ndarray), f.name
            np.testing.assert_array_equal(x, getattr(ref_res, f.name), err_msg=f.name)
    fit, extra = lifter.lift(xy, vis, return_intermediates=True, as_numpy=True)
    assert all(isinstance(x, np.ndarray) for x in extra.values())


# ----------------------------------------------------------------------------- files


def test_save_load_round_trip_and_mat_equivalence(model, ref, tmp_path):
    model.meta["training"] = {"subjects": [1, 5], "note": "round trip"}
    path = model.save(tmp_path / "pose3d.safetensors")
    again = PoseModel3D.load(path)
    for name in ("mu", "e", "sigma"):
        assert np.array_equal(getattr(again, name), getattr(model, name))
    assert again.meta == model.meta
    xy, vis = _xy(ref), ref["in_visibility"]
    a, b = model.lift(xy, vis), again.lift(xy, vis)
    _close(a.pose_3d, b.pose_3d, 1e-9)
    model.lift_method = again.lift_method = "direct"
    try:
        a, b = model.lift(xy, vis), again.lift(xy, vis)
    finally:
        model.lift_method = "auto"
    assert np.array_equal(a.pose_3d, b.pose_3d) and np.array_equal(a.components.score,
                                                             b.components.score)
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_model_files(model, tmp_path):
    import scipy.io
    from safetensors.numpy import save_file

    with pytest.raises(FileNotFoundError, match="not found"):
        PoseModel3D.load(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="not found"):
        PoseModel3D.from_mat(tmp_path / "missing.mat")
    good = model.save(tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError, match="cannot read"):
        PoseModel3D.load(tmp_path / "cut.safetensors")
    save_file({"mu": model.mu, "e": model.e}, tmp_path / "keys.safetensors",
              metadata={"format": "poseviewer.pose_model_3d"})
    with pytest.raises(ModelFileError, match="sigma"):
        PoseModel3D.load(tmp_path / "keys.safetensors")
    save_file({"mu": model.mu, "e": model.e, "sigma": np.ascontiguousarray(model.sigma[:, :5])},
              tmp_path / "shape.safetensors", metadata={"format": "poseviewer.pose_model_3d"})
    with pytest.raises(ModelFileError, match="sigma must have shape"):
        PoseModel3D.load(tmp_path / "shape.safetensors")
    save_file({"mu": model.mu, "e": model.e, "sigma": model.sigma}, tmp_path / "other.st")
    with pytest.raises(ModelFileError, match="not a poseviewer"):
        PoseModel3D.load(tmp_path / "other.st")
    scipy.io.savemat(tmp_path / "nokey.mat", {"mu": model.mu.reshape(3, 51)})
    with pytest.raises(ModelFileError, match="missing key"):
        PoseModel3D.from_mat(tmp_path / "nokey.mat")
    scipy.io.savemat(tmp_path / "badshape.mat", {"mu": np.zeros((3, 50)), "e": np.zeros(
        (3, 25, 51)), "sigma": np.ones((3, 26))})
    with pytest.raises(ModelFileError, match="mu has shape"):
        PoseModel3D.from_mat(tmp_path / "badshape.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(ModelFileError):
        PoseModel3D.from_mat(tmp_path / "junk.mat")


def test_constructor_validation(model):
    mu, e, sigma = model.mu, model.e, model.sigma
    with pytest.raises(ValueError, match="mu must have shape"):
        PoseModel3D(mu[:, :2], e, sigma)
    with pytest.raises(ValueError, match="e must have shape"):
        PoseModel3D(mu, e[:2], sigma)
    with pytest.raises(ValueError, match="sigma must have shape"):
        PoseModel3D(mu, e, sigma[:, :25])
    with pytest.raises(ValueError, match="orthonormal"):
        PoseModel3D(mu, e * 1.01, sigma)
    with pytest.raises(ValueError, match="positive"):
        PoseModel3D(mu, e, -sigma)
    bad = mu.copy()
    bad[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        PoseModel3D(bad, e, sigma)
    small = PoseModel3D(mu[:1], e[:1, :10], sigma[:1, [*range(10), 25]],
                        meta={"name": "tiny"})
    assert small.num_components == 1 and small.num_basis == 10
    assert small.lift(np.random.default_rng(0).normal(size=(2, 14, 2)) * 50,
                      np.ones((2, 14), bool)).components.coeffs.shape == (2, 1, 13)


def test_bad_lift_inputs(lifter, ref):
    xy, vis = _xy(ref)[:2].copy(), ref["in_visibility"][:2]
    with pytest.raises(ValueError, match=r"joints_2d must have shape \(N, 14, 2\)"):
        lifter.lift(xy[:, :13], vis)
    with pytest.raises(ValueError, match=r"joints_2d must have shape"):
        lifter.lift(xy[0], vis[0])
    with pytest.raises(ValueError, match=r"visible must have shape \(2, 14\)"):
        lifter.lift(xy, vis[:1])
    with pytest.raises(ValueError, match="visible must be bool"):
        lifter.lift(xy, vis.astype(float))
    bad = xy.copy()
    bad[1, 3, 0] = np.inf
    with pytest.raises(ValueError, match="right_elbow of person 1 is NaN or infinite"):
        lifter.lift(bad, vis)
    bad[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        lifter.lift(bad, vis)
    with pytest.raises(ValueError, match="not a numeric array"):
        lifter.lift([["a"] * 14], vis[:1])
    fit = lifter.lift(xy, vis.astype(np.int64))  # 0/1 integers are accepted
    assert fit.lifted.all()
    empty, extra = lifter.lift(np.zeros((0, 14, 2)), np.zeros((0, 14), bool),
                              return_intermediates=True)
    assert empty.pose_3d.shape == (0, 17, 3) and lifter.project(empty).shape == (0, 3, 17, 2)
    assert extra["residuals"].shape == (0, 3, 100)


def test_large_products_run_on_lift_threads(model, ref, monkeypatch) -> None:
    """Preparing a pattern runs with ``lift_threads`` BLAS threads and numpy's setting is
    restored afterwards; None leaves numpy's setting alone."""
    from threadpoolctl import threadpool_info

    from poseviewer.lifting import cache

    def blas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    seen: list[list[int]] = []
    real = cache.build

    def spy(*args, **kwargs):
        seen.append(blas())
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "build", spy)
    before = blas()
    assert before
    m = PoseModel3D(model.mu, model.e, model.sigma)
    m.build_min = 0
    m.lift_threads = 2 if before[0] == 1 else 1
    xy, vis = _xy(ref)[:1], ref["in_visibility"][:1]
    m.lift(xy, vis)
    assert seen == [[m.lift_threads] * len(before)] and blas() == before
    m.lift_threads = None
    m.pattern_cache.clear()
    m.lift(xy, vis)
    assert seen[-1] == before and blas() == before


def test_pattern_operators_cold_warm_and_direct_agree(model, ref):
    """The per-pattern operators: a pattern is prepared (and cached, LRU) once
    ``build_min`` people with it have been met, in one call or over several; until then it
    is solved directly; every route gives the direct solver's numbers, in both modes."""
    xy, vis = _xy(ref), ref["in_visibility"]
    keys = [tuple(r) for r in vis[:, OBS_SOURCES]]
    assert len(set(keys)) == 5 and max(keys.count(k) for k in keys) == 17
    direct = PoseModel3D(model.mu, model.e, model.sigma)
    direct.lift_method = "direct"
    m = PoseModel3D(model.mu, model.e, model.sigma)
    m.build_min = 2
    direct.elevations = m.elevations = (0.0,)  # the yaw-only fit's routes
    for exact in (True, False):
        want = direct.lift(xy, vis, release_exact=exact)
        m.pattern_cache.clear()
        first = m.lift(xy, vis, release_exact=exact)
        assert len(m.pattern_cache) == 1  # the 17 fully visible people; 4 single ones not
        second = m.lift(xy, vis, release_exact=exact)
        assert len(m.pattern_cache) == 5  # met twice now
        third = m.lift(xy[::-1], vis[::-1], release_exact=exact)
        for got in (first, second, third.select(np.arange(len(xy))[::-1])):
            _close(got.components.pose_3d, want.components.pose_3d, 1e-9)
            _close(got.components.score, want.components.score, 1e-15, rtol=1e-9)
            _close(got.components.joint_cov, want.components.joint_cov, 1e-9,
                   rtol=1e-9)
            _close(got.components.joint_cov_dof, want.components.joint_cov_dof,
                   1e-9)
            assert np.array_equal(got.component, want.component)
    m.pattern_cache.clear()
    m.build_min = 18
    m.lift(xy, vis)
    assert len(m.pattern_cache) == 0
    m.lift(xy[:1], vis[:1])  # 17 + 1 people with that pattern now
    assert len(m.pattern_cache) == 1
    m.pattern_cache.max_patterns = 2
    m.build_min = 1
    m.lift(xy, vis)
    assert len(m.pattern_cache) == 2 and m.pattern_cache.nbytes > 0
    with pytest.raises(ValueError, match="lift_method"):
        m.lift_method = "fastest"
        m.lift(xy[:1], vis[:1])


# ----------------------------------------------------------------------------- uncertainty


def _dense_joint_cov(w, v, mu, e, sigma, theta, pose, rec_blend, scale):
    """The documented posterior joint covariance, built densely from the spec's 80 x 29
    system (scale column removed: the scale is given), QR-inverted (the covariance of
    c = a / s in model mm), propagated through U^T, the blend and the centring, plus the
    noise 1 / lambda_d^2 per coordinate, times (scale x size factor)^2, times the noise
    the fit's own residual gives (Student-t): returns (covariances, degrees of freedom)."""
    a_mat, b = _release_problem(w, v, mu, e, sigma, theta)
    _, r = np.linalg.qr(a_mat[:, 1:])
    rinv = np.linalg.inv(r)
    cov_a = rinv @ rinv.T  # (28, 28): a_1 .. a_28
    # the noise estimate: residual of the data rows at the least-squares solution given the
    # scale, over n_obs - trace(hat matrix of the data rows) degrees of freedom
    lam = sigma[25]
    rest = np.linalg.lstsq(a_mat[:, 1:], b - a_mat[:, 0] * scale, rcond=None)[0]
    data = slice(0, 34)
    rss = np.sum((a_mat[data, 1:] @ rest + a_mat[data, 0] * scale - b[data]) ** 2) / lam**2
    fitted = np.trace(a_mat[data, 1:] @ cov_a @ a_mat[data, 1:].T)
    dof = max(2 * v.sum() - fitted, 3.0)
    t_factor = max(rss * lam**2 / (scale**2 * dof), 1.0) * dof / (dof - 2)
    big_e = np.zeros((28, 3, 17))
    big_e[0, 0] = big_e[2, 0] = 1.0
    big_e[1, 1] = 1.0
    big_e[3:] = e
    s, c = math.sin(theta), math.cos(theta)
    ut = np.array([[s, c, 0], [-c, s, 0], [0, 0, 1.0]])
    d = np.ones((3, 17))
    d[[0, 2]] = np.where(v > 0, 1 / 2.55, 1.0)
    cen = np.eye(17) - 1 / 17
    g = np.stack([((ut @ big_e[i]) * d) @ cen for i in range(28)], -1).reshape(51, 28)
    noise = np.diag((d * d).reshape(-1)) / sigma[25] ** 2
    cen51 = np.kron(np.eye(3), cen)
    full = g @ cov_a @ g.T + cen51 @ noise @ cen51.T
    f = np.median(pose / rec_blend) * scale  # model mm -> normalised -> output mm
    blocks = full.reshape(3, 17, 3, 17).transpose(1, 3, 0, 2)[np.arange(17), np.arange(17)]
    return blocks * f * f * t_factor, dof


def test_joint_cov_matches_dense_posterior(lifter, ref):
    """fit.components.joint_cov equals the posterior built densely from the release's
    least-squares system at the chosen angle (occluded case and capped case)."""
    names = list(ref["case_names"])
    for case in ("D_occl_legs_left", "G_roll45_mu0"):
        i = names.index(case)
        fit, it = lifter.lift(_xy(ref)[i : i + 1], ref["in_visibility"][i : i + 1],
                              return_intermediates=True)
        cov = fit.components.joint_cov
        assert cov.shape == (1, 3, 17, 3, 3)
        w = it["norm_pose"][0]
        v = it["weights"][0].astype(float)
        for k in range(3):
            want, dof = _dense_joint_cov(
                w, v, ref["model_mu"][k], ref["model_e"][k], ref["model_sigma"][k],
                float(fit.components.yaw[0, k]), it["pose_3d"][0, k],
                it["rec_blend"][0, k], float(fit.components.scale[0, k]))
            _close(cov[0, k], want, 1e-9, rtol=1e-6)
            assert float(fit.components.joint_cov_dof[0, k]) == pytest.approx(dof, rel=1e-7)
        _close(fit.joint_cov[0], cov[0, int(fit.component[0])], 0)
        _close(fit.joint_cov_dof[0], fit.components.joint_cov_dof[0, int(fit.component[0])], 0)
        # symmetric positive definite, mm^2: occluded joints are the least certain
        ev = np.linalg.eigvalsh(cov)
        assert (ev > 0).all()
    occluded = ~it["weights"][0]
    tr = np.trace(fit.joint_cov[0], axis1=-2, axis2=-1)
    assert occluded.any() and tr[occluded].mean() > tr[~occluded].mean()

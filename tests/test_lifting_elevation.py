"""The lifting's yaw x elevation fit (``poseviewer.lifting.elevation``): its least squares
against a hand-built spec system with R = R_x(e) R_z(yaw), the level grid against the
yaw-only fit, a pose rendered from a known elevation, and the cache's memory budget."""

from __future__ import annotations

import math

import numpy as np
import pytest

from poseviewer.eval3d import EvalConfig, camera_frame, project, tilt
from poseviewer.lifting import PoseModel3D, cache, elevation, spec
from poseviewer.lifting.fit import normalise
from poseviewer.lifting.spec import OBS_SLOTS, OBS_SOURCES
from poseviewer.metrics import p_mpjpe
from poseviewer.skeleton import h36m_to_cpm

pytestmark = pytest.mark.shared

_CAM = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])


def _xy(ref: dict[str, np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(ref["in_pose_2d_yx"][:, :, ::-1])


def _fresh(model: PoseModel3D) -> PoseModel3D:
    """A new model searching the elevation grid and observing the head top as H36M's head
    (the poses rendered here have no top of the head; the offset has its own test)."""
    m = PoseModel3D(model.mu, model.e, model.sigma)
    assert not m.elevation_search  # the default: the release's yaw-only fit
    m.elevation_search = True
    m.head_top_offset = 0.0
    return m


def _model_poses(model: PoseModel3D, n: int, seed: int) -> np.ndarray:
    """(n, 17, 3) poses drawn from component 0 of the model (half its prior spread)."""
    rng = np.random.default_rng(seed)
    mu, e, sig = model.mu[0], model.e[0], model.sigma[0]
    c = rng.standard_normal((n, e.shape[0])) / (5.2 * sig[: e.shape[0]]) * 0.5
    return (mu[None] + np.einsum("ni,iab->nab", c, e)).swapaxes(1, 2)


def _spec_residual(model: PoseModel3D, w: np.ndarray, vis17: np.ndarray, k: int,
                   theta: float, elev: float) -> tuple[float, np.ndarray]:
    """The spec's step-2 system (80 x 29 with its 1e-5 prior rows), projected with
    P = first two rows of C R_x(e) U(theta)^T, solved by numpy's lstsq; at e = 0 with a
    30th column, a vertical image shift (prior row 1e-5), the other elevations' E_1..E_3
    move the image vertically."""
    mu, e, sig = model.mu[k], model.e[k], model.sigma[k]
    big = np.zeros((29, 3, 17))
    big[0] = mu
    big[1, 0] = big[3, 0] = 1.0
    big[2, 1] = 1.0
    big[4:] = e
    reg = np.r_[0.0, 1e-5, 1e-5, 1e-5, 5.2 * sig[:25]]
    t = np.zeros(29)
    t[0] = -0.003
    s, c = math.sin(theta), math.cos(theta)
    u_mat = np.array([[s, -c, 0], [c, s, 0], [0, 0, 1.0]])
    se, ce = math.sin(elev), math.cos(elev)
    rx = np.array([[1.0, 0, 0], [0, ce, -se], [0, se, ce]])
    p = (_CAM @ rx @ u_mat.T)[:2]
    pe = np.einsum("ab,ibj->aji", p, big).reshape(34, 29)
    vv = np.r_[vis17, vis17]
    lam = sig[25]
    if elev == 0.0:
        pe = np.concatenate([pe, np.r_[np.zeros(17), np.ones(17)][:, None]], 1)
        reg, t = np.r_[reg, 1e-5], np.r_[t, 0.0]
    a_mat = np.vstack([lam * vv[:, None] * pe, np.diag(reg)])
    b = np.r_[lam * vv * w.reshape(-1), t]
    a, *_ = np.linalg.lstsq(a_mat, b, rcond=None)
    return float(((a_mat @ a - b) ** 2).sum()), a


@pytest.mark.parametrize("case", [0, 4])
def test_elevated_forms_match_the_spec_system(model, ref, case):
    """Every rotation's prepared residual and coefficients equal lstsq on the spec's system
    with the tilted camera (hidden joints included: case 4 has some)."""
    xy, vis = _xy(ref)[case : case + 1], ref["in_visibility"][case : case + 1]
    m = _fresh(model)
    u, v, *_ = normalise(xy, vis, OBS_SOURCES, spec.XY_INDEX, 5)
    ops = cache.build(m.arrays, v[0])
    elev = np.deg2rad(np.array([0.0, 20.0, 65.0, -15.0]))
    eops = elevation.build(m.arrays, ops, elev, 0, 0.0)
    feats = u[:, ops.full_i] * u[:, ops.full_j]
    r = (feats @ eops.res_packed).reshape(3, 4, 100)
    w = np.zeros((2, 17))
    w[0, OBS_SLOTS], w[1, OBS_SLOTS] = u[0, :14], u[0, 14:28]
    vis17 = np.zeros(17)
    vis17[OBS_SLOTS] = v[0]
    for k in range(3):
        for ei in range(4):
            for j in (0, 37, 81):
                want, a = _spec_residual(m, w, vis17, k, 2 * math.pi * j / 100, elev[ei])
                assert r[k, ei, j] == pytest.approx(want, rel=1e-9, abs=1e-13)
                flat = np.array([(k * 4 + ei) * 100 + j])
                got = eops.coefficients(m.arrays, v[0], flat)[0] @ u[0]
                # the translations' split among E_1..E_3 is the minimum-norm one, as
                # lstsq's; the last entry is the level shift
                if ei:
                    a = np.r_[a, 0.0]
                np.testing.assert_allclose(got, a, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("hidden", [(), (3,), (0, 5, 9, 13)])
def test_fast_forms_equal_a_plain_solve_per_rotation(model, hidden):
    """``elevation.build``'s residual forms (the basis eliminated in the dual, the image-x
    block once per yaw) equal a plain solve of every rotation's normal equations
    (``solve_forms``, spike applied) over the whole grid; the coefficient maps solved on
    first need equal the plain solve's, and are kept."""
    m = _fresh(model)
    mask = np.ones(14, bool)
    mask[list(hidden)] = False
    ops = cache.pairs_only(m.arrays, mask)
    elev = np.deg2rad(np.array([-15.0, 0.0, 30.0, 75.0]))
    eops = elevation.build(m.arrays, ops, elev, 1, 0.15)
    x, prior, tmap = elevation.design(m.arrays, mask, elev)
    res, coef = elevation.solve_forms(x, prior, tmap, m.arrays.lam[:, None, None], None)
    res[:, elev != 0.0] *= 1.15
    i, j = ops.full_i, ops.full_j
    want = res[..., i, j] + np.where(i == j, 0.0, res[..., j, i])  # (K, E, A, P)
    want = want.reshape(-1, len(i)).T
    np.testing.assert_allclose(eops.res_packed, want, rtol=0, atol=1e-13 * np.abs(want).max())
    flat = np.array([[0, 150], [399, 1199]])
    got = eops.coefficients(m.arrays, mask, flat)
    np.testing.assert_array_equal(got, coef.reshape(-1, *coef.shape[-2:])[flat])
    assert eops.filled == 4 and eops.have[flat].all()
    before = eops.nbytes
    eops.coefficients(m.arrays, mask, flat[:1])
    assert eops.nbytes == before


def test_level_grid_is_the_yaw_only_fit(model, ref):
    """With the grid {0} the fit is the yaw-only one (to the bit), and the elevated fit
    reports 0 wherever it chose the level camera."""
    xy, vis = _xy(ref), ref["in_visibility"]
    level = _fresh(model)
    level.elevations = (0.0,)
    exact = _fresh(model).lift(xy, vis, release_exact=True, as_numpy=True)
    a = level.lift(xy, vis, as_numpy=True)
    b = level.lift(xy, vis, release_exact=False, as_numpy=True)
    np.testing.assert_allclose(a.pose_3d, b.pose_3d, atol=1e-9)
    assert (a.elevation == 0).all() and (exact.elevation == 0).all()
    grid = _fresh(model).lift(xy, vis, as_numpy=True)
    el = grid.components.elevation
    assert set(np.round(np.degrees(el[np.isfinite(el)])).tolist()) <= {
        -15.0, 0.0, 15.0, 30.0, 45.0, 60.0, 75.0}
    # the grid's level camera also fits a vertical shift: never a worse residual
    flat = (el == 0) & ~grid.components.capped & ~a.components.capped
    assert flat.any()
    assert (grid.components.residual[flat] <= a.components.residual[flat] + 1e-9).all()


@pytest.mark.parametrize("elev_deg", [0.0, 30.0, 60.0])
def test_pose_rendered_at_a_known_elevation_is_recovered(model, elev_deg):
    """Model poses seen from a camera tilted down by e (orthographic): the fitted
    elevation is e (the grid holds it) for most of them, within one grid step for all but
    a few, and the 3D pose is close."""
    poses = _model_poses(model, 24, seed=3)
    gt = camera_frame(poses, np.random.default_rng(4).uniform(0, 2 * np.pi, len(poses)))
    from poseviewer.eval3d import EvalConfig

    img = h36m_to_cpm(project(tilt(gt, elev_deg), "orthographic", EvalConfig()))
    fit = _fresh(model).lift(img, np.ones((len(img), 14), bool), as_numpy=True)
    got = np.degrees(fit.elevation)
    assert np.mean(np.abs(got - elev_deg) < 1e-6) >= 0.5, got
    assert np.mean(np.abs(got - elev_deg) <= 15.0 + 1e-6) >= 0.85, got
    assert np.median(p_mpjpe(fit.pose_3d, gt)) < 30.0
    # its projection is the fit's, through the tilted camera
    proj = np.asarray(_fresh(model).project(fit))
    np.testing.assert_allclose(proj, fit.components.joints_2d, atol=1e-8)


def test_yaw_only_fit_fails_where_the_grid_recovers(model):
    """The point of the grid: from 60 degrees up, the yaw-only fit's 3D error is several
    times the elevated fit's."""
    poses = _model_poses(model, 16, seed=5)
    gt = camera_frame(poses, np.random.default_rng(6).uniform(0, 2 * np.pi, len(poses)))
    from poseviewer.eval3d import EvalConfig

    img = h36m_to_cpm(project(tilt(gt, 60.0), "orthographic", EvalConfig()))
    vis = np.ones((len(img), 14), bool)
    level = _fresh(model)
    level.elevations = (0.0,)
    yaw_only = p_mpjpe(level.lift(img, vis, as_numpy=True).pose_3d, gt).mean()
    tilted = p_mpjpe(_fresh(model).lift(img, vis, as_numpy=True).pose_3d, gt).mean()
    assert tilted * 2.0 < yaw_only, (tilted, yaw_only)


def test_elevated_fit_warm_and_methods_agree(model, ref):
    """One implementation: a cold and a warm lift and the "direct" method give the same
    numbers over the grid."""
    xy, vis = _xy(ref), ref["in_visibility"]
    m = _fresh(model)
    a = m.lift(xy, vis)
    b = m.lift(xy, vis)
    d = _fresh(model)
    d.lift_method = "direct"
    c = d.lift(xy, vis, as_numpy=True)
    for x in (b, c):
        np.testing.assert_allclose(x.pose_3d, a.pose_3d, atol=1e-9)
        np.testing.assert_array_equal(x.elevation, a.elevation)
        np.testing.assert_allclose(x.joint_cov, a.joint_cov, rtol=1e-9, atol=1e-9)


def test_elevated_joint_cov_is_a_covariance(model, ref):
    """The covariances over the grid are symmetric positive definite, finite, and of the
    size of the level ones (the tilt changes their shape, not their order of magnitude)."""
    xy, vis = _xy(ref), ref["in_visibility"]
    fit = _fresh(model).lift(xy, vis, as_numpy=True)
    cov = fit.components.joint_cov
    tilted = fit.components.elevation != 0
    assert tilted.any()
    c = cov[tilted]
    np.testing.assert_allclose(c, c.swapaxes(-1, -2), atol=1e-9)
    assert (np.linalg.eigvalsh(c) > 0).all()
    lvl = cov[~tilted]
    ratio = np.median(np.trace(c, axis1=-2, axis2=-1)) / np.median(
        np.trace(lvl, axis1=-2, axis2=-1))
    assert 0.2 < ratio < 5.0


def test_cache_stays_within_its_memory_budget(model, ref):
    """The pattern cache drops the least recently used patterns beyond ``max_bytes``."""
    xy, vis = _xy(ref), ref["in_visibility"]
    m = _fresh(model)
    m.build_min = 0  # every pattern prepared
    m.lift(xy[:1], vis[:1])
    one = m.pattern_cache.nbytes
    assert one > 0
    m.pattern_cache.max_bytes = int(2.5 * one)
    m.lift(xy, vis)  # 5 visibility patterns
    assert len(m.pattern_cache) == 2
    assert m.pattern_cache.nbytes <= m.pattern_cache.max_bytes


def test_bad_grids(model, ref):
    m = _fresh(model)
    xy, vis = _xy(ref)[:1], ref["in_visibility"][:1]
    for grid, msg in (((15.0, 30.0), "hold 0"), ((0.0, 95.0), "-90, 90"),
                      ((0.0, 0.0), "distinct")):
        m.elevations = grid
        with pytest.raises(ValueError, match=msg):
            m.lift(xy, vis)


def test_head_top_offset_is_observed_through_the_fit(model):
    """With ``head_top_offset`` a the grid's fit observes the CPM head top as head +
    a (head - thorax): on poses whose 2D head top is rendered that way, the matching
    offset reproduces it (the head slot of ``joints_2d`` shows the projected head top)
    far better than the release's observation of the head itself, and the 3D pose is
    closer; the observed rows are that combination of the model's rows."""
    a = 1.5
    h, t = 10, 8  # H36M-17's head and thorax
    m = _fresh(model)
    m.head_top_offset = a
    obs = m.observed_arrays()
    i = int(np.flatnonzero(OBS_SLOTS == h)[0])
    mu = model.mu
    np.testing.assert_allclose(obs.muz[:, i], (1 + a) * mu[:, 2, h] - a * mu[:, 2, t])
    np.testing.assert_allclose(obs.ex[:, i], (1 + a) * model.e[:, :, 0, h]
                               - a * model.e[:, :, 0, t])
    poses = _model_poses(model, 16, seed=7)
    gt = camera_frame(poses, np.random.default_rng(8).uniform(0, 2 * np.pi, len(poses)))
    from poseviewer.eval3d import EvalConfig

    img17 = project(tilt(gt, 30.0), "orthographic", EvalConfig())
    top = (1 + a) * img17[:, h] - a * img17[:, t]
    img = h36m_to_cpm(img17)
    img[:, 0] = top  # the CPM head top: LSP's top of the head
    vis = np.ones((len(img), 14), bool)
    errs, pm = {}, {}
    for off in (0.0, a):
        m.head_top_offset = off
        fit = m.lift(img, vis, as_numpy=True)
        errs[off] = np.linalg.norm(fit.joints_2d[:, h] - top, axis=-1).mean()
        pm[off] = p_mpjpe(fit.pose_3d, gt).mean()
    height = np.ptp(img[:, :, 1], axis=1).mean()
    assert errs[a] < 0.01 * height < errs[0.0], errs
    assert pm[a] < pm[0.0]


def test_head_top_offset_lands_on_the_head_top_and_leaves_the_other_joints():
    """Hand-made, with the bundled model (whose head top ``spec.HEAD_TOP_OFFSET`` is): poses
    drawn from it, turned by yaws of the grid and seen from 30 degrees above (a rotation
    of the grid: the fit reproduces them up to its prior), with
    the CPM head top drawn at head + a (head - thorax). With ``head_top_offset`` a the
    projected head top lands on it and the other 13 joints project where the fit of the
    same poses with H36M's head drawn and observed (offset 0) puts them: the offset moves
    nothing but the head slot. Observing that head top as H36M's head (offset 0) misses
    it and pulls the other joints."""
    from poseviewer.eval3d import EvalConfig
    from poseviewer.lifting import load_pose_model
    from poseviewer.paths import DEFAULT_POSE_MODEL

    bundled = load_pose_model(DEFAULT_POSE_MODEL)
    a = spec.HEAD_TOP_OFFSET
    assert a > 0 and bundled.head_top_offset == a and _fresh(bundled).head_top_offset == 0.0
    h, t = spec.HEAD_SLOT, spec.THORAX_SLOT
    poses = _model_poses(bundled, 16, seed=3)
    yaw = spec.THETA[np.random.default_rng(4).integers(0, spec.NUM_ANGLES, 16)]
    img17 = project(tilt(camera_frame(poses, yaw), 30.0), "orthographic", EvalConfig())
    top = (1 + a) * img17[:, h] - a * img17[:, t]  # by hand
    with_top = h36m_to_cpm(img17)
    with_top[:, 0] = top  # the CPM head top (CPM-14 slot 0)
    rest = np.arange(17) != h
    height = np.ptp(img17[:, :, 1], axis=1)[:, None]
    vis = np.ones((16, 14), bool)
    m = _fresh(bundled)
    plain = m.lift(h36m_to_cpm(img17), vis, as_numpy=True)  # offset 0, H36M's head drawn
    m.head_top_offset = a
    fit = m.lift(with_top, vis, as_numpy=True)
    m.head_top_offset = 0.0
    wrong = m.lift(with_top, vis, as_numpy=True)
    assert np.allclose(np.degrees(fit.elevation), 30.0)
    assert np.allclose(np.degrees(plain.elevation), 30.0)
    err = np.linalg.norm(fit.joints_2d[:, h] - top, axis=-1) / height[:, 0]
    assert err.max() < 0.01, err
    moved = np.linalg.norm(fit.joints_2d[:, rest] - plain.joints_2d[:, rest], axis=-1) / height
    assert moved.max() < 0.003, moved.max()
    miss = np.linalg.norm(wrong.joints_2d[:, h] - top, axis=-1) / height[:, 0]
    assert miss.min() > 5 * err.max(), (miss, err)
    pulled = np.linalg.norm(wrong.joints_2d[:, rest] - plain.joints_2d[:, rest],
                            axis=-1) / height
    assert pulled.max() > 3 * moved.max(), (pulled.max(), moved.max())


def test_elevation_search_switch_and_its_grid(model):
    """Off by default (the release's yaw-only fit); on, the fit searches the grid and a
    pose seen from 45 degrees above gets a non-level elevation; off again, level."""
    from poseviewer.eval3d import EvalConfig

    m = PoseModel3D(model.mu, model.e, model.sigma)
    assert not m.elevation_search and tuple(m.elevations) == spec.LEVEL
    gt = _model_poses(m, 8, seed=5)
    img = h36m_to_cpm(project(tilt(camera_frame(gt, np.linspace(0, 6, 8)), 45.0),
                              "orthographic", EvalConfig()))
    vis = np.ones((8, 14), bool)
    assert not np.asarray(m.lift(img, vis, as_numpy=True).elevation).any()
    m.elevation_search = True
    assert tuple(m.elevations) == spec.ELEVATIONS_DEG
    assert (np.degrees(m.lift(img, vis, as_numpy=True).elevation) > 10).mean() >= 0.5
    m.elevation_search = False
    assert not np.asarray(m.lift(img, vis, as_numpy=True).elevation).any()


def test_float32_screen_keeps_the_float64_choice(model, ref):
    """The float32 pass's error stays within its bound at every rotation, and the screened
    residuals give the float64 forms' choice and residual (people of the reference cases
    and random poses with hidden joints)."""
    m = _fresh(model)
    xy, vis = _xy(ref), ref["in_visibility"]
    rng = np.random.default_rng(5)
    more = xy[rng.integers(0, len(xy), 12)] + rng.normal(scale=3.0, size=(12, 14, 2))
    hide = rng.random((12, 14)) < 0.15
    xy, vis = np.concatenate([xy, more]), np.concatenate([vis, vis[:12] & ~hide])
    u, v, *_ = normalise(xy, vis, OBS_SOURCES, spec.XY_INDEX, 5)
    elev = np.deg2rad(np.array(spec.ELEVATIONS_DEG))
    for i in range(len(u)):
        ops = cache.pairs_only(m.arrays, v[i])
        eops = elevation.build(m.arrays, ops, elev, 1, 0.15)
        f = u[i : i + 1, ops.full_i] * u[i : i + 1, ops.full_j]
        full = elevation.residuals(eops.res_t, f)[0]
        r32 = (eops.res32 @ f[0].astype(np.float32)).astype(np.float64)
        bound = elevation._BOUND32 * np.linalg.norm(f[0]) * eops.rnorm
        assert (np.abs(r32 - full) <= bound).all()
        got = elevation._screened(eops, f)[0].reshape(3, -1)
        want = full.reshape(3, -1)
        np.testing.assert_array_equal(got.argmin(1), want.argmin(1))
        np.testing.assert_allclose(got.min(1), want.min(1), rtol=1e-12, atol=0)
        assert np.isfinite(got).sum() < 0.1 * got.size  # a screen, not every rotation


@pytest.mark.parametrize("hidden", [0, 1, 4])
def test_direct_grid_route_equals_the_prepared_forms(model, ref, hidden):
    """People of a pattern not prepared are solved directly over the grid
    (``elevation.fit_direct``): the same rotation, component, residuals, coefficients,
    covariances' terms as the prepared forms (``fit_prepared``) and as the plain solve per
    rotation (``solve_forms``), for the reference cases (some capped) and random poses at
    several elevations with 0, 1 or 4 hidden joints; and a lift gives the same poses by
    either route."""
    rng = np.random.default_rng(11 + hidden)
    m = _fresh(model)
    m.head_top_offset = spec.HEAD_TOP_OFFSET  # the grid's observation of the head top
    obs = m.observed_arrays()
    elev, level = m.elevation_grid(False)
    poses = _model_poses(model, 6, seed=hidden)
    gt = camera_frame(poses, rng.uniform(0, 2 * np.pi, len(poses)))
    rend = [h36m_to_cpm(project(tilt(gt[i : i + 1], e), "orthographic", EvalConfig()))
            for i, e in enumerate((-15.0, 0.0, 20.0, 40.0, 60.0, 75.0))]
    xy = np.concatenate([_xy(ref), *rend])
    vis = np.ones(xy.shape[:2], bool)
    for row in vis:
        row[rng.choice(14, hidden, replace=False)] = False
    u, v, *_ = normalise(xy, vis, OBS_SOURCES, spec.XY_INDEX, 5)
    capped = 0
    for i in range(len(u)):
        ops = cache.pairs_only(obs, v[i])
        eops = elevation.build(obs, ops, elev, level, 0.15)
        want = elevation.fit_prepared(obs, model.arrays, ops, eops, u[i : i + 1], True,
                                      cache.PatternCache())
        got = elevation.fit_direct(obs, model.arrays, v[i], u[i : i + 1], True, elev,
                                   level, 0.15)
        for j in (2, 3, 5):  # yaw, elevation, capped
            np.testing.assert_array_equal(got[j], want[j])
        for j in (0, 1, 4, 6, 7, 8):  # coefficients, residual, tz, residuals, cov terms
            np.testing.assert_allclose(got[j], want[j], rtol=1e-9,
                                       atol=1e-12 * np.abs(want[j]).max())
        capped += int(want[5].sum())
        if i % 7 == 0:  # the plain solve per rotation: every residual
            x, prior, tmap = elevation.design(obs, v[i], elev)
            res, _ = elevation.solve_forms(x, prior, tmap, obs.lam[:, None, None], None)
            res[:, elev != 0.0] *= 1.15
            plain = (res @ u[i]) @ u[i]
            r = elevation.direct_residuals(obs, v[i], u[i : i + 1], elev, 0.15)[0][0]
            np.testing.assert_allclose(r, plain.reshape(r.shape), rtol=1e-9)
    if hidden == 0:
        assert capped  # the reference cases' capped refits went through the direct route
    # whole lifts: the direct route (the default for rare patterns) against every pattern
    # prepared
    d = _fresh(model)
    p = _fresh(model)
    p.build_min = 0
    a, b = d.lift(xy, vis), p.lift(xy, vis)
    assert len(d.pattern_cache) == 0 and len(p.pattern_cache) > 0
    np.testing.assert_array_equal(a.component, b.component)
    np.testing.assert_array_equal(a.elevation, b.elevation)
    np.testing.assert_array_equal(a.components.yaw, b.components.yaw)
    scale = np.abs(b.pose_3d).max()
    np.testing.assert_allclose(a.pose_3d, b.pose_3d, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(a.joint_cov, b.joint_cov, rtol=1e-9,
                               atol=1e-9 * np.abs(b.joint_cov).max())
    np.testing.assert_allclose(a.components.score, b.components.score, rtol=1e-9)

"""The lifting's fit with the camera's elevation: yaw x elevation, R = R_x(e) R_z(yaw).

The release searches 100 yaws about the vertical axis only (a level camera). Here every
yaw is also tried at every elevation of a grid (``spec.ELEVATIONS_DEG``; positive: the
camera looks down, so a point further away appears higher in the image): the model pose
U(theta)^T (mu a_0 + sum a_i E_i), rows (x, y, z) with y the horizontal depth and z up, is
seen as

    image x = x,    image y (normalised, down) = -(sin e y + cos e z).

The pose itself stays world-up (z up): only its projection, the blend and the covariances
see the tilt. ``release_exact`` and a grid of {0} keep the release's yaw-only fit
(``cache``); with the grid every elevation, the level one included, is solved here.

Per visibility pattern, component, yaw and elevation, the regularised least squares of
spec step 2 is solved with unknowns (a_0, the image translation T = (T_x, T_y), basis
b): the three translation columns E_1, E_2, E_3 project to 2 image directions when
e != 0, and their minimum-norm coefficients (a_1, a_2, a_3) = M^T (M M^T)^-1 T carry the
prior 1e-10 |a|^2 = 1e-10 T^T (M M^T)^-1 T (M the 2 x 3 map of the three columns to the
image translation). At e = 0 they move the image horizontally only (the release's
kappa on T_x) and T_y is a free vertical shift ``tz`` (prior 1e-10): without it the
level camera could not absorb the offset between the model's mean pose (centred on 17
joints) and the observation (centred on the visible ones), which the tilted cameras
absorb through their depth translation, and level views would be fitted as tilted ones.
This parametrisation keeps every system well conditioned. As in ``cache``, the
residual is prepared as a quadratic form of u = [w_x (14), w_y (14), 1] (``build``), so
lifting a batch is a product and an argmin. The 2,100 forms are not solved one by one
(``solve_forms``, the plain solve, is their reference and the capped refit's solver):
``residual_forms`` eliminates the basis in the dual, the image-x block once per yaw
(image x does not depend on the elevation) and a 14 x 14 Schur complement per rotation.
The residual of every non-level rotation is multiplied by 1 + ``spike`` (the elevation
prior), before the choice and in the score. A float32 copy of the forms screens the
rotations (with a rigorous bound on its rounding); the few that may be a component's
minimum are evaluated on the float64 forms. The coefficient maps of a rotation are solved
(float64) the first time it is chosen. About 8 MB a pattern for K = 3 and 7 elevations
before its first fit (float64 and float32 forms), plus the joint covariances' terms and
the maps of the rotations chosen so far.

A pattern met by fewer than ``build_min`` people is not prepared: ``fit_direct`` solves
every rotation for those people alone (``direct_residuals``: the same elimination with the
people's coordinates and the three columns a_0, T_x, T_y as right-hand sides, one Cholesky
factorisation per rotation), then the chosen rotations' coefficients by the plain solve,
as the prepared route does; the same choice and results to float noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from poseviewer.lifting import covariance, spec
from poseviewer.lifting.cache import PatternCache, PatternOps
from poseviewer.lifting.params import ModelArrays


def _trig(sin: np.ndarray, cos: np.ndarray, elev: np.ndarray
          ) -> tuple[np.ndarray, ...]:
    """(s, c, se, ce) broadcast to (E, A)."""
    s, c = sin[None, :], cos[None, :]
    se, ce = np.sin(elev)[:, None], np.cos(elev)[:, None]
    return s, c, se, ce


def translation_maps(s: np.ndarray, c: np.ndarray, se: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(the min-norm map T -> (a_1, a_2, a_3) (..., 3, 2), the prior's matrix (M M^T)^-1
    (..., 2, 2)) for yaws (s, c) and elevation sines ``se`` (broadcast; se != 0)."""
    s, c, se = np.broadcast_arrays(s, c, se)
    m = np.zeros(s.shape + (2, 3))
    m[..., 0, 0] = m[..., 0, 2] = s
    m[..., 0, 1] = c
    m[..., 1, 0] = m[..., 1, 2] = se * c
    m[..., 1, 1] = -se * s
    mmt_inv = np.linalg.inv(m @ m.swapaxes(-1, -2))
    return m.swapaxes(-1, -2) @ mmt_inv, mmt_inv


def _translation(elev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the translation maps T -> (a_1, a_2, a_3) (E, A, 3, 2), the prior's matrix
    (E, A, 2, 2)) of every (elevation, yaw); at e = 0 T_x as the release's and T_y a free
    vertical shift (``tz``)."""
    E, A = len(elev), len(spec.SIN)
    tmap = np.zeros((E, A, 3, 2))
    mmt_inv = np.zeros((E, A, 2, 2))
    lev = elev == 0.0
    if (~lev).any():
        tmap[~lev], mmt_inv[~lev] = translation_maps(
            spec.SIN[None, :], spec.COS[None, :], np.sin(elev[~lev])[:, None])
    if lev.any():
        sa, ca = spec.SIN, spec.COS
        tmap[lev, :, :, 0] = (np.stack([sa, ca, sa], -1) / (1.0 + sa * sa)[:, None])[None]
        mmt_inv[lev, :, 0, 0] = 1.0 / (1.0 + sa * sa)
        mmt_inv[lev, :, 1, 1] = 1.0
    return tmap, mmt_inv


def design(arrays: ModelArrays, mask: np.ndarray, elev: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The data columns of every (component, elevation, yaw): (X (K, E, A, 2J, 3 + B)
    with columns (mu, T_x, T_y, basis), rows image x then image y of the observed slots,
    masked; the prior (K, E, A, 3 + B, 3 + B) divided by lambda_d^2; the translation maps
    (E, A, 3, 2))."""
    K = arrays.ex.shape[0]
    E, A = len(elev), len(spec.SIN)
    k, e, a = (i.reshape(-1) for i in np.meshgrid(np.arange(K), np.arange(E), np.arange(A),
                                                  indexing="ij"))
    x, prior, _ = design_at(arrays, mask, elev, k, e, a)
    lead = (K, E, A)
    return (x.reshape(lead + x.shape[1:]), prior.reshape(lead + prior.shape[1:]),
            _translation(elev)[0])


def design_at(arrays: ModelArrays, mask: np.ndarray, elev: np.ndarray, k: np.ndarray,
              e: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``design`` of the systems (component ``k``, elevation index ``e``, yaw index ``a``)
    (S,) each: (X (S, 2J, 3 + B), the prior (S, 3 + B, 3 + B), the translation maps
    (S, 3, 2))."""
    v = np.asarray(mask, dtype=np.float64)
    J, B = arrays.ex.shape[1:]
    S = len(k)
    s, c = spec.SIN[a][:, None, None], spec.COS[a][:, None, None]
    se, ce = np.sin(elev)[e][:, None, None], np.cos(elev)[e][:, None, None]
    ext = np.concatenate([arrays.mux[..., None], arrays.ex], -1)[k]  # (S, J, 1 + B)
    eyt = np.concatenate([arrays.muy[..., None], arrays.ey], -1)[k]
    ezt = np.concatenate([arrays.muz[..., None], arrays.ez], -1)[k]
    n = 3 + B
    x = np.zeros((S, 2 * J, n))
    rows_x = s * ext + c * eyt
    rows_y = -(se * (s * eyt - c * ext) + ce * ezt)
    x[..., :J, 0] = rows_x[..., 0]
    x[..., :J, 3:] = rows_x[..., 1:]
    x[..., J:, 0] = rows_y[..., 0]
    x[..., J:, 3:] = rows_y[..., 1:]
    x[..., :J, 1] = 1.0
    x[..., J:, 2] = 1.0
    x *= np.r_[v, v][:, None]
    tmap, mmt_inv = _translation(elev)
    tmap, mmt_inv = tmap[e, a], mmt_inv[e, a]
    lam2 = arrays.lam[k] ** 2
    prior = np.zeros((S, n, n))
    prior[..., 1:3, 1:3] = spec.TRANSLATION_PRIOR * mmt_inv / lam2[:, None, None]
    ar = np.arange(3, n)
    prior[..., ar, ar] = arrays.rho[k]
    return x, prior, tmap


def solve_forms(x: np.ndarray, prior: np.ndarray, tmap: np.ndarray, lam: np.ndarray,
                cap: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(residual forms (..., 29, 29) times lambda_d^2, the full release residual; the
    coefficient maps (..., 4 + B + 1, 29): a_0 .. a_{3+B}, then the level camera's
    vertical shift ``tz`` (0 at other elevations)) of the systems ``x`` (..., 2J, 3 + B)
    with ``prior``; ``lam`` the data weights (broadcast to the leading shape ...);
    ``cap``: the scale fixed (step 3's refit, every prior targeting 0). ``tmap`` (broadcast
    to ..., 3, 2): T -> (a_1, a_2, a_3); where it maps T_y to 0 (a level camera) T_y is
    ``tz``. A plain solve per rotation: the reference of ``residual_forms``."""
    lead, J2 = x.shape[:-2], x.shape[-2]
    nu = J2 + 1
    # target W u: the observed coordinates (already zero where invisible), masked like x
    mask2 = (np.abs(x).sum(-1) > 0).astype(np.float64)  # (..., 2J) visible rows
    w = np.zeros(lead + (J2, nu))
    ar = np.arange(J2)
    w[..., ar, ar] = mask2
    if cap is not None:  # a_0 = cap: its column moves to the right-hand side
        w[..., nu - 1] = -cap * x[..., 0]
        x, prior = x[..., 1:], prior[..., 1:, 1:]
    nmat = x.swapaxes(-1, -2) @ x + prior
    f = x.swapaxes(-1, -2) @ w  # (..., n, nu)
    z = np.linalg.solve(nmat, f)  # (..., n', nu)
    res = w.swapaxes(-1, -2) @ w - f.swapaxes(-1, -2) @ z
    res = 0.5 * (res + res.swapaxes(-1, -2))
    res *= np.asarray(lam * lam)[..., None, None]
    if cap is None:
        res[..., nu - 1, nu - 1] += spec.SCALE_PRIOR**2
    B = x.shape[-1] - (2 if cap is not None else 3)
    coef = np.zeros(lead + (5 + B, nu))
    if cap is None:
        coef[..., 0, :] = z[..., 0, :]
        t = z[..., 1:3, :]
        coef[..., 4:-1, :] = z[..., 3:, :]
    else:
        coef[..., 0, nu - 1] = cap
        t = z[..., 0:2, :]
        coef[..., 4:-1, :] = z[..., 2:, :]
    coef[..., 1:4, :] = tmap @ t
    lev = ~tmap[..., 1].any(-1)  # T_y not carried by a_1..a_3
    coef[..., -1, :] = np.where(lev[..., None], t[..., 1, :], 0.0)
    return res, coef


def residual_forms(arrays: ModelArrays, mask: np.ndarray, elev: np.ndarray) -> np.ndarray:
    """The residual forms of ``solve_forms`` (uncapped) for every (component, elevation,
    yaw), (K, E, A, 29, 29) divided by lambda_d^2 (not symmetrised: R_ij and R_ji differ
    by rounding), without solving 2,100 systems of 28 unknowns.

    The basis coefficients are eliminated in the dual: with D = [D_x; D_y] the image rows
    of the basis (D_x = s E_x + c E_y: the yaw only; D_y = -(sin e (s E_y - c E_x) + cos e
    E_z)) and Lambda its prior, the data's form is M = (I + D Lambda^-1 D^T)^-1, inverted
    by blocks: the image-x block (I + K_xx)^-1 once per yaw, its Schur complement S_yy
    (a 14 x 14 SPD system) per elevation, every product of S_yy a trig combination of
    per-yaw 14 x 14 matrices. The three columns without a basis prior (the mean pose a_0,
    T_x, T_y) are then eliminated from M with their 3 x 3 normal matrix:
    R = M - M H (H^T M H + P)^-1 H^T M."""
    v = np.asarray(mask, dtype=np.float64)
    K, J, B = arrays.ex.shape
    E, A = len(elev), len(spec.SIN)
    rinv = 1.0 / arrays.rho  # (K, B)
    exv, eyv, ezv = (e * v[:, None] for e in (arrays.ex, arrays.ey, arrays.ez))

    def gram(p: np.ndarray, q: np.ndarray) -> np.ndarray:  # p Lambda^-1 q^T (K, J, J)
        return (p * rinv[:, None, :]) @ q.swapaxes(-1, -2)

    gxx, gxy, gxz = gram(exv, exv), gram(exv, eyv), gram(exv, ezv)
    gyy, gyz, gzz = gram(eyv, eyv), gram(eyv, ezv), gram(ezv, ezv)
    gyx = gxy.swapaxes(-1, -2)
    s, c = spec.SIN[None, :, None, None], spec.COS[None, :, None, None]
    gxx, gxy, gxz, gyy, gyz, gyx = (g[:, None] for g in (gxx, gxy, gxz, gyy, gyz, gyx))
    sc = s * c
    eye = np.eye(J)
    # per yaw (K, A, J, J): D_x L D_x^T, D_x L (s E_y - c E_x)^T, D_x L E_z^T, ...
    kxx = s * s * gxx + sc * (gxy + gyx) + c * c * gyy
    pa = s * s * gxy - sc * gxx + sc * gyy - c * c * gyx
    qa = s * gxz + c * gyz
    dd = s * s * gyy - sc * (gyx + gxy) + c * c * gxx
    dz = s * gyz - c * gxz
    sx = np.linalg.inv(kxx + eye)
    vp, vq = sx @ pa, sx @ qa
    pvq = pa.swapaxes(-1, -2) @ vq
    a1 = dd - pa.swapaxes(-1, -2) @ vp
    a2 = dz + dz.swapaxes(-1, -2) - pvq - pvq.swapaxes(-1, -2)
    a3 = gzz[:, None] - qa.swapaxes(-1, -2) @ vq
    # per elevation: trig combinations of these (one product each over the grid)
    se, ce = np.sin(elev), np.cos(elev)
    E, JJ = len(elev), J * J
    a123 = np.stack([a1, a2, a3], 1).reshape(K, 3, A * JJ)
    syy = (np.stack([se * se, se * ce, ce * ce], -1) @ a123).reshape(K, E, A, J, J)
    syy.reshape(K, E, A, JJ)[..., :: J + 1] += 1.0
    y = np.linalg.inv(syy)  # (K, E, A, J, J)
    vv = (np.stack([-se, -ce], -1) @ np.stack([vp, vq], 1).reshape(K, 2, A * JJ)).reshape(
        K, E, A, J, J)  # (I + K_xx)^-1 K_xy
    vy = vv @ y
    full = np.zeros((K, E, A, 2 * J + 1, 2 * J + 1))  # u's constant: the scale prior
    full[..., 2 * J, 2 * J] = (spec.SCALE_PRIOR**2 / arrays.lam**2)[:, None, None]
    m = full[..., : 2 * J, : 2 * J]
    np.matmul(vy, vv.swapaxes(-1, -2), out=m[..., :J, :J])
    m[..., :J, :J] += sx[:, None]
    np.negative(vy, out=m[..., :J, J:])
    np.negative(vy.swapaxes(-1, -2), out=m[..., J:, :J])
    m[..., J:, J:] = y
    # the columns a_0, T_x, T_y (their image rows) and their prior
    sa, ca = spec.SIN[None, :, None], spec.COS[None, :, None]
    mux, muy, muz = (mu * v for mu in (arrays.mux, arrays.muy, arrays.muz))  # (K, J)
    h = np.zeros((K, E, A, 2 * J, 3))
    h[..., :J, 0] = (sa * mux[:, None] + ca * muy[:, None])[:, None]
    se3, ce3 = se[None, :, None, None], ce[None, :, None, None]
    h[..., J:, 0] = -(se3 * (sa * muy[:, None] - ca * mux[:, None])[:, None]
                      + ce3 * muz[:, None, None])
    h[..., :J, 1] = v
    h[..., J:, 2] = v
    mh = m @ h
    nrm = h.swapaxes(-1, -2) @ mh  # (K, E, A, 3, 3)
    _, prior = _translation(elev)
    nrm[..., 1:, 1:] += spec.TRANSLATION_PRIOR * prior[None] / (arrays.lam ** 2)[
        :, None, None, None, None]
    m -= (mh @ _inv3(nrm)) @ mh.swapaxes(-1, -2)
    return full


def _inv3(a: np.ndarray) -> np.ndarray:
    """The inverses of symmetric 3 x 3 matrices (..., 3, 3) by their cofactors."""
    a00, a01, a02 = a[..., 0, 0], a[..., 0, 1], a[..., 0, 2]
    a11, a12, a22 = a[..., 1, 1], a[..., 1, 2], a[..., 2, 2]
    c00 = a11 * a22 - a12 * a12
    c01 = a02 * a12 - a01 * a22
    c02 = a01 * a12 - a02 * a11
    c11 = a00 * a22 - a02 * a02
    c12 = a01 * a02 - a00 * a12
    c22 = a00 * a11 - a01 * a01
    det = a00 * c00 + a01 * c01 + a02 * c02
    out = np.stack([c00, c01, c02, c01, c11, c12, c02, c12, c22], -1)
    return (out / det[..., None]).reshape(a.shape)


def _pack(res: np.ndarray, ti: np.ndarray, tj: np.ndarray) -> np.ndarray:
    """Residual forms (..., 29, 29) as rows (prod(...), P) over the pairs (``ti``, ``tj``):
    u^T R u = sum_i R_ii u_i^2 + sum_{i<j} (R_ij + R_ji) u_i u_j."""
    off = np.where(ti == tj, 0.0, 1.0)
    packed = res[..., ti, tj] + off * res[..., tj, ti]
    return np.ascontiguousarray(packed.reshape(-1, len(ti)))


@dataclass
class ElevOps:
    """The operators of one visibility pattern over an elevation grid (its pairs and the
    level covariances come from the pattern's ``cache.PatternOps``)."""

    elev: np.ndarray  #: (E,) radians
    level: int  #: index of the level elevation
    spike: float
    res_t: np.ndarray  #: (K E A, P) every rotation's residual form (spike applied) over
    #: the pattern's pairs, rows flat (component, elevation, yaw) (``residuals``)
    res32: np.ndarray = field(init=False)  #: ``res_t`` in float32: the first pass
    rnorm: np.ndarray = field(init=False)  #: (K E A,) the rows' 2-norms: its error bound
    coef: np.ndarray
    """(K E A, 5 + B, 29) the coefficients' and tz's maps, solved for a rotation the first
    time it is chosen (``coefficients``); ``have`` says which (made with np.zeros: the
    pages of maps never solved take no memory)."""
    have: np.ndarray = field(init=False)
    filled: int = field(init=False)  #: how many maps ``have`` holds
    cov_t: np.ndarray = field(init=False)  #: the joint covariances' terms, on first need
    qd: np.ndarray = field(init=False)
    capped: dict[int, tuple[np.ndarray, np.ndarray]] = field(init=False)
    """Component -> step 3's capped-scale forms over the grid (residual forms packed
    (E A, P), spike applied; coefficient maps (E A, 5 + B, 29)), made on the first person
    who needs them."""

    def __post_init__(self) -> None:
        self.res32 = self.res_t.astype(np.float32)
        self.rnorm = np.sqrt(np.einsum("np,np->n", self.res_t, self.res_t))
        n = self.res_t.shape[0]
        self.have = np.zeros(n, dtype=bool)
        self.filled = 0
        self.cov_t = np.zeros((n, spec.NUM_JOINTS_3D, 3, 3))
        self.qd = np.zeros((n, 2))
        self.capped = {}

    @property
    def res_packed(self) -> np.ndarray:
        """(P, K E A): r = (u_i u_j over the pairs) @ res_packed (a view of ``res_t``)."""
        return self.res_t.T

    @property
    def nbytes(self) -> int:
        """Memory held (bytes): the coefficient maps solved so far, and every other array
        (the covariances' terms counted whole)."""
        maps = self.filled * self.coef[0].nbytes
        arrays = (self.res_t, self.res32, self.rnorm, self.have, self.cov_t, self.qd)
        return maps + sum(a.nbytes for a in arrays) + sum(
            r.nbytes + c.nbytes for r, c in self.capped.values())

    def coefficients(self, arrays: ModelArrays, mask: np.ndarray, flat: np.ndarray
                     ) -> np.ndarray:
        """The coefficient maps (..., 5 + B, 29) of flat rotations ``flat`` (any shape),
        each solved (``solve_forms``, float64) the first time it is asked for."""
        todo = flat[~self.have[flat]]
        if todo.size:
            todo = np.unique(todo)
            E, A = len(self.elev), len(spec.SIN)
            k, rest = np.divmod(todo, E * A)
            e, a = np.divmod(rest, A)
            x, prior, tmap = design_at(arrays, mask, self.elev, k, e, a)
            _, coef = solve_forms(x, prior, tmap, arrays.lam[k], None)
            self.coef[todo] = coef
            self.have[todo] = True
            self.filled += len(todo)
        return self.coef.take(flat, axis=0)


def build(arrays: ModelArrays, ops: PatternOps, elev: np.ndarray, level: int, spike: float
          ) -> ElevOps:
    """The operators of the pattern of ``ops`` (its pairs and the level covariances) over
    the grid ``elev``, for the model ``arrays`` (its head slot as the fit observes it):
    every rotation's residual form (``residual_forms``); the coefficient maps are solved
    per rotation when first chosen (``ElevOps.coefficients``)."""
    r = residual_forms(arrays, ops.mask, elev)
    K, E, A, nu = r.shape[:4]
    ti, tj = ops.full_i, ops.full_j
    # u^T R u over the pairs: R_ii, and 2 R_ij off the diagonal; x lambda_d^2 and the spike
    packed = r.reshape(K * E * A, nu * nu).take(ti * nu + tj, axis=1)
    scale = np.where(elev != 0.0, 1.0 + spike, 1.0)[None, :] * (arrays.lam**2)[:, None]
    packed *= np.repeat(scale.reshape(-1), A)[:, None]
    packed *= np.where(ti == tj, 1.0, 2.0)
    maps = np.zeros((K * E * A, arrays.num_basis + 5, nu))
    return ElevOps(elev=elev, level=level, spike=spike, res_t=packed, coef=maps)


def capped_forms(arrays: ModelArrays, ops: PatternOps, eops: ElevOps, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Step 3's forms over the grid for component ``k`` (every prior targeting 0): (the
    residual forms packed over the pattern's pairs (E A, P), spike applied; the
    coefficient maps (E A, 5 + B, 29)); solved on first need and kept on ``eops``."""
    forms = eops.capped.get(k)
    if forms is None:
        one = arrays.component(k)
        x, prior, tmap = design(one, ops.mask, eops.elev)
        res, coef = solve_forms(x, prior, tmap, one.lam[:, None, None], spec.SCALE_CAP)
        res[:, eops.elev != 0.0] *= 1.0 + eops.spike
        forms = eops.capped[k] = (_pack(res, ops.full_i, ops.full_j),
                                  np.ascontiguousarray(coef.reshape((-1,) + coef.shape[-2:])))
    return forms


def noise_terms(arrays: ModelArrays, level_arrays: ModelArrays, ops: PatternOps,
                eops: ElevOps, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``cache.NoiseTerms.get`` over the grid: (cov_t, (q, dof)) for flat indices
    (component, elevation, yaw) (any shape), computed on first need and kept; the level
    camera's from the pattern's level terms (``level_arrays``: the model with H36M's head
    observed), the others with ``arrays``."""
    qd = eops.qd.take(flat, axis=0)
    if not qd.min() > 0.0:
        E, A = len(eops.elev), ops.coef.shape[1]
        todo = np.unique(flat[qd[..., 1] == 0])
        k, rest = np.divmod(todo, E * A)
        e, a = np.divmod(rest, A)
        lev = e == eops.level
        if lev.any():
            eops.cov_t[todo[lev]], eops.qd[todo[lev]] = ops.noise.get(level_arrays,
                                                                      k[lev] * A + a[lev])
        if (~lev).any():
            sel = ~lev
            vis = np.repeat(ops.mask[None], int(sel.sum()), axis=0)
            cov, fitted = joint_cov(arrays, vis, k[sel], a[sel], eops.elev[e[sel]])
            eops.cov_t[todo[sel]], eops.qd[todo[sel]] = covariance.fit_noise_terms(
                cov, fitted, 2.0 * float(ops.mask.sum()), arrays.lam[k[sel]])
        qd = eops.qd.take(flat, axis=0)
    return eops.cov_t.take(flat, axis=0), qd


def joint_cov(arrays: ModelArrays, vis: np.ndarray, comp: np.ndarray,
              angle: np.ndarray, elev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``covariance.joint_cov`` (with ``fitted``) at non-zero elevations ``elev`` (P,)
    radians: (P, 17, 3, 3) covariances in the model's mm and (P,) the fitted parameters.

    The same posterior as the level one, with the tilted camera: the image-y data rows
    see the depth (-(sin e y + cos e z)), the image translation has two directions
    (T_x, T_y, prior 1e-10 T^T (M M^T)^-1 T, moving the pose by the minimum-norm
    (a_1, a_2, a_3)), and the blend shrinks the visible joints along the tilted image
    plane (image right and (0, sin e, cos e)) instead of x and z.
    """
    P = len(comp)
    J, B = arrays.ex.shape[1:]
    nj = arrays.e.shape[-1]
    obs = spec.OBS_SLOTS
    v = vis.astype(np.float64)
    s, c = spec.SIN[angle], spec.COS[angle]
    se, ce = np.sin(elev), np.cos(elev)
    lam2 = arrays.lam[comp] ** 2
    ex, ey, ez = arrays.ex[comp], arrays.ey[comp], arrays.ez[comp]
    vb = v[..., None]
    dmat = np.zeros((P, 2 * J, B + 2))
    dmat[:, :J, :B] = (s[:, None, None] * ex + c[:, None, None] * ey) * vb
    dmat[:, :J, B] = v
    dmat[:, J:, :B] = -(se[:, None, None] * (s[:, None, None] * ey - c[:, None, None] * ex)
                        + ce[:, None, None] * ez) * vb
    dmat[:, J:, B + 1] = v
    prec = dmat.swapaxes(1, 2) @ dmat
    diag = prec.reshape(P, -1)[:, :: B + 3]
    diag[:, :B] += arrays.rho[comp]
    tmap, mmt_inv = translation_maps(s, c, se)  # (P, 3, 2), (P, 2, 2)
    prec[:, B:, B:] += spec.TRANSLATION_PRIOR * mmt_inv / lam2[:, None, None]
    # G: (b, T) -> the pose in the output frame (rows x, y, z = U^T e; T moves it by the
    # three translation columns' (x', y') = Q a)
    rot = np.zeros((P, 3, 3))
    rot[:, 0, 0] = rot[:, 1, 1] = s
    rot[:, 0, 1] = c
    rot[:, 1, 0] = -c
    rot[:, 2, 2] = 1.0
    e = arrays.e
    et = np.ascontiguousarray(e.transpose(0, 2, 1, 3)).reshape(e.shape[0], 3, B * nj)
    g = np.zeros((P, 3, B + 2, nj))
    g[:, :, :B] = (rot @ et[comp]).reshape(P, 3, B, nj)
    q = np.zeros((P, 2, 3))
    q[:, 0, 0] = q[:, 0, 2] = s
    q[:, 0, 1] = c
    q[:, 1, 0] = q[:, 1, 2] = -c
    q[:, 1, 1] = s
    g[:, :2, B:] = (q @ tmap)[..., None]
    # the blend: visible joints shrink along the image plane's axes
    kb = spec.BLEND_WEIGHT / (1.0 + spec.BLEND_WEIGHT)
    nvec = np.stack([np.zeros(P), se, ce], -1)  # (P, 3)
    plane = np.zeros((P, 3, 3))
    plane[:, 0, 0] = 1.0
    plane += nvec[:, :, None] * nvec[:, None, :]
    v17 = np.zeros((P, nj))
    v17[:, obs] = v
    dj = np.eye(3)[None, None] - kb * v17[..., None, None] * plane[:, None]  # (P, nj, 3, 3)
    g = np.einsum("pjab,pbcj->pacj", dj, g)
    g = g - g.mean(-1, keepdims=True)  # centring
    gk = g.transpose(0, 2, 1, 3).reshape(P, B + 2, 3 * nj)
    lt = np.linalg.cholesky(prec)
    rhs = np.concatenate([gk, dmat.swapaxes(1, 2)], -1)
    y = np.linalg.solve(lt, rhs)
    hat = y[..., 3 * nj :]
    fit_n = (hat * hat).sum((1, 2))
    yj = y[..., : 3 * nj].reshape(P, B + 2, 3, nj).transpose(0, 3, 2, 1)  # (P, nj, 3, B+2)
    cov = yj @ yj.swapaxes(-1, -2)
    d2 = dj @ dj  # (P, nj, 3, 3)
    noise = d2 * (1.0 - 2.0 / nj) + d2.sum(1, keepdims=True) / (nj * nj)
    cov = (cov + noise) / lam2[:, None, None, None]
    return 0.5 * (cov + cov.swapaxes(-1, -2)), fit_n


def residuals(res_t: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """(n, R) the residuals of packed forms ``res_t`` (R, P) at ``feats`` (n, P) (one person:
    a matrix-vector product on the contiguous rows)."""
    if len(feats) == 1:
        return np.dot(res_t, feats[0])[None]
    return feats @ res_t.T


#: The float32 pass's error bound over |f| |R_k| (2-norms), f and R rounded to float32 and
#: a sum of P products: (P + 4) 2^-24 (P = 435 pairs at most) (with a margin).
_BOUND32 = 1.01 * (435 + 4) * 2.0**-24


def _screened(eops: ElevOps, feats: np.ndarray) -> np.ndarray:
    """Every rotation's residual (n, K E A), exact (float64, as ``residuals``) where it may
    be its component's minimum, +inf elsewhere: a float32 pass over all rotations (half
    the memory to stream), then the float64 forms of the rotations whose float32 residual,
    less its error bound, is not above the component's smallest upper bound (2-7 of 700
    on the reference cases)."""
    n, K = len(feats), len(eops.res_t) // (len(eops.elev) * len(spec.SIN))
    r32 = residuals(eops.res32, feats.astype(np.float32)).astype(np.float64)
    bound = (_BOUND32 * np.sqrt(np.einsum("np,np->n", feats, feats)))[:, None] * eops.rnorm
    r32 = r32.reshape(n, K, -1)
    bound = bound.reshape(n, K, -1)
    hi = (r32 + bound).min(-1)
    pi, ki, ri = np.nonzero(r32 - bound <= hi[..., None])
    if len(pi) > 64 * n * K:  # no separation (people without joints): every form
        return residuals(eops.res_t, feats)
    rows = ki * r32.shape[-1] + ri
    r = np.full(r32.shape, np.inf)
    r[pi, ki, ri] = np.einsum("cp,cp->c", eops.res_t[rows], feats[pi])
    return r


def fit_prepared(arrays: ModelArrays, level_arrays: ModelArrays, ops: PatternOps,
                 eops: ElevOps, ug: np.ndarray, keep_all: bool, cache: PatternCache
                 ) -> tuple[np.ndarray, ...]:
    """``fit._fit_prepared`` over the grid: (a (n, K, 4 + B), residual (n, K), yaw index
    (n, K), elevation index (n, K), the level camera's vertical shift tz (n, K), capped
    (n, K), all residuals (n, K, E A) or None, cov_t, qd). ``arrays`` the model as the grid
    observes it (``build``), ``level_arrays`` with H36M's head (``noise_terms``); new
    capped forms are kept within ``cache``'s budget."""
    n = len(ug)
    K, A = ops.coef.shape[:2]
    E = len(eops.elev)
    feats = ug.take(ops.full_i, axis=1)
    feats *= ug.take(ops.full_j, axis=1)
    r = (residuals(eops.res_t, feats) if keep_all else _screened(eops, feats)).reshape(
        n, K, E * A)
    best = r.argmin(-1)  # (n, K) e A + a, first minimum on ties
    rb = np.take_along_axis(r, best[..., None], -1)[..., 0]
    koff = np.arange(K) * (E * A)
    held = (eops.filled, len(eops.capped))
    a = (eops.coefficients(arrays, ops.mask, best + koff) @ ug[:, None, :, None])[..., 0]
    cp = a[..., 0] > spec.SCALE_CAP
    if cp.any():
        for k in np.unique(np.nonzero(cp)[1]):  # step 3: per component, its people at once
            i = np.flatnonzero(cp[:, k])
            packed, coef = capped_forms(arrays, ops, eops, int(k))
            rr = residuals(packed, feats[i])  # (m, E A)
            j = rr.argmin(-1)
            r[i, k] = rr
            best[i, k] = j
            rb[i, k] = rr[np.arange(len(i)), j]
            a[i, k] = (coef.take(j, axis=0) @ ug[i, :, None])[..., 0]
    if (eops.filled, len(eops.capped)) != held:  # new maps or capped forms
        cache.trim()  # keep the cache within its budget
    flat = best + koff
    ei, ai = np.divmod(best, A)
    cov_t, qd = noise_terms(arrays, level_arrays, ops, eops, flat)
    return (a[..., :-1], rb, ai, ei, a[..., -1], cp, (r if keep_all else None), cov_t, qd)


def _per_yaw(arrays: ModelArrays, keep: np.ndarray) -> tuple[np.ndarray, ...]:
    """``residual_forms``'s per-yaw matrices for the visible joints ``keep`` only (hidden
    joints decouple: identity rows of M, zero right-hand sides): ((I + K_xx)^-1, its
    products with the image-y rows' two parts (vp, vq), the Schur complement's three trig
    parts (a1, a2, a3)), each (K, A, J', J')."""
    rinv = 1.0 / arrays.rho  # (K, B)
    exv, eyv, ezv = (e[:, keep] for e in (arrays.ex, arrays.ey, arrays.ez))
    J = len(keep)

    def gram(p: np.ndarray, q: np.ndarray) -> np.ndarray:  # p Lambda^-1 q^T (K, J, J)
        return (p * rinv[:, None, :]) @ q.swapaxes(-1, -2)

    gxx, gxy, gxz = gram(exv, exv), gram(exv, eyv), gram(exv, ezv)
    gyy, gyz, gzz = gram(eyv, eyv), gram(eyv, ezv), gram(ezv, ezv)
    K, A = len(gxx), len(spec.SIN)
    # per yaw, trig combinations of (gxx, gxy, gyx, gyy, gxz, gyz): one product
    s, c = spec.SIN, spec.COS
    z, ss, sc, cc = np.zeros(A), s * s, s * c, c * c
    wts = np.stack([np.stack(r, -1) for r in (
        (ss, sc, sc, cc, z, z),  # kxx = D_x L D_x^T
        (-sc, ss, -cc, sc, z, z),  # pa = D_x L (s E_y - c E_x)^T
        (z, z, z, z, s, c),  # qa = D_x L E_z^T
        (cc, -sc, -sc, ss, z, z),  # dd = (s E_y - c E_x) L (...)^T
        (z, z, z, z, -c, s))], 0)  # dz = (s E_y - c E_x) L E_z^T; (5, A, 6)
    gs = np.stack([gxx, gxy, gxy.swapaxes(-1, -2), gyy, gxz, gyz], 1).reshape(K, 6, J * J)
    kxx, pa, qa, dd, dz = (wts.reshape(5 * A, 6) @ gs).reshape(K, 5, A, J, J).swapaxes(0, 1)
    sx = np.linalg.inv(kxx + np.eye(J))
    vp, vq = sx @ pa, sx @ qa
    pvq = pa.swapaxes(-1, -2) @ vq
    a1 = dd - pa.swapaxes(-1, -2) @ vp
    a2 = dz + dz.swapaxes(-1, -2) - pvq - pvq.swapaxes(-1, -2)
    a3 = gzz[:, None] - qa.swapaxes(-1, -2) @ vq
    return sx, vp, vq, a1, a2, a3


def direct_residuals(arrays: ModelArrays, mask: np.ndarray, ug: np.ndarray, elev: np.ndarray,
                     spike: float) -> tuple[np.ndarray, np.ndarray]:
    """Every rotation's residual of people ``ug`` (n, 29) sharing visibility ``mask``,
    solved directly (no prepared forms): ((n, K, E A) uncapped as ``build``'s forms give
    them, spike applied; (n, K, E A) capped, step 3's refit as ``capped_forms``'s).

    The same elimination as ``residual_forms`` with the people's image coordinates as
    right-hand sides instead of the 29 columns of u: with the columns H = (a_0, T_x, T_y)
    and the people's observations w as Q = [H, w] (image-x rows Q_x, image-y rows Q_y),
    Q^T M Q = Q_x^T (I + K_xx)^-1 Q_x (per yaw) + T^T S_yy^-1 T, T = Q_y - V^T Q_x (per
    rotation: one Cholesky of [[S_yy, T], [T^T, C I]] gives T^T L^-T in its bottom-left
    block, C = |T|_F^2 + 1 > the largest eigenvalue of T^T S_yy^-1 T since S_yy >= I);
    then a_0 and T (and T alone at the capped scale) by their 3 x 3 (2 x 2) system."""
    keep = np.flatnonzero(mask)
    per_yaw = _per_yaw(arrays, keep)
    got = [_direct_chunk(arrays, keep, len(mask), per_yaw, ug[p0 : p0 + DIRECT_PEOPLE], elev,
                         spike) for p0 in range(0, len(ug), DIRECT_PEOPLE)]
    if len(got) == 1:
        return got[0]
    return np.concatenate([r for r, _ in got]), np.concatenate([c for _, c in got])


#: People per ``direct_residuals`` solve (their observations are right-hand sides of
#: every rotation's Cholesky factorisation, with the three columns a_0, T_x, T_y).
DIRECT_PEOPLE = 8


def _direct_chunk(arrays: ModelArrays, keep: np.ndarray, Jf: int,
                  per_yaw: tuple[np.ndarray, ...], ug: np.ndarray, elev: np.ndarray,
                  spike: float) -> tuple[np.ndarray, np.ndarray]:
    """``direct_residuals`` for a few people (``per_yaw``: ``_per_yaw``'s matrices)."""
    J, n = len(keep), len(ug)
    K = arrays.num_components
    E, A = len(elev), len(spec.SIN)
    sx, vp, vq, a1, a2, a3 = per_yaw
    se, ce = np.sin(elev), np.cos(elev)
    # right-hand sides: columns (h_0, h_x, h_y, w_1 .. w_n); image-x rows per yaw
    c = 3 + n
    sa, ca = spec.SIN[None, :, None], spec.COS[None, :, None]
    mux, muy, muz = (mu[:, keep] for mu in (arrays.mux, arrays.muy, arrays.muz))
    qx = np.zeros((K, A, J, c))
    qx[..., 0] = sa * mux[:, None] + ca * muy[:, None]
    qx[..., 1] = 1.0
    qx[..., 3:] = ug[:, keep].T
    gx = qx.swapaxes(-1, -2) @ (sx @ qx)  # (K, A, c, c)
    # per rotation, T^T = Q_y^T + se px^T + ce pq^T and S_yy = I + se^2 a1 + se ce a2 +
    # ce^2 a3: each one product with the elevations' trig weights over per-yaw parts
    parts = np.zeros((K, 3, A, c, J))
    parts[:, 0] = (qx.swapaxes(-1, -2) @ vp)
    parts[:, 0, :, 0] -= sa * muy[:, None] - ca * mux[:, None]  # h_0's image y
    parts[:, 1] = (qx.swapaxes(-1, -2) @ vq)
    parts[:, 1, :, 0] -= muz[:, None]
    parts[:, 2, :, 2] = 1.0
    parts[:, 2, :, 3:] = ug[:, Jf + keep]
    ones = np.ones(E)
    tt = (np.stack([se, ce, ones], -1) @ parts.reshape(K, 3, -1)).reshape(K, E, A, c, J)
    syy = (np.stack([se * se, se * ce, ce * ce], -1)
           @ np.stack([a1, a2, a3], 1).reshape(K, 3, -1)).reshape(K, E, A, J, J)
    m = J + c
    aug = np.empty((K, E, A, m, m))
    aug[..., :J, :J] = syy
    ar = np.arange(J)
    aug[..., ar, ar] += 1.0
    aug[..., J:, :J] = tt
    aug[..., :J, J:] = tt.swapaxes(-1, -2)
    aug[..., J:, J:] = 0.0
    big = np.einsum("...ij,...ij->...", tt, tt) + 1.0  # (K, E, A)
    dv = np.arange(J, m)
    aug[..., dv, dv] = big[..., None]
    y = np.linalg.cholesky(aug)[..., J:, :J]  # (K, E, A, c, J) = T^T L^-T
    g = gx[:, None] + y @ y.swapaxes(-1, -2)  # (K, E, A, c, c): Q^T M Q
    lam2 = arrays.lam**2
    _, mmt_inv = _translation(elev)
    prior = spec.TRANSLATION_PRIOR * mmt_inv[None] / lam2[:, None, None, None, None]
    spk = np.where(elev != 0.0, 1.0 + spike, 1.0)[None, :, None, None]  # (1, E, 1, 1)
    lam4 = lam2[:, None, None, None]
    # uncapped: the 3 x 3 system of (a_0, T_x, T_y)
    nrm = g[..., :3, :3].copy()
    nrm[..., 1:, 1:] += prior
    ghw = g[..., :3, 3:]  # (K, E, A, 3, n)
    quad = (ghw * (_inv3(nrm) @ ghw)).sum(-2)
    ww = np.diagonal(g[..., 3:, 3:], axis1=-2, axis2=-1)  # (K, E, A, n)
    res = (lam4 * (ww - quad) + spec.SCALE_PRIOR**2) * spk
    # capped: a_0 = cap, q = w - cap h_0; T by its 2 x 2 system
    cap = spec.SCALE_CAP
    qq = ww - 2.0 * cap * g[..., 0, 3:] + cap * cap * g[..., 0, 0, None]
    qt = g[..., 1:3, 3:] - cap * g[..., 1:3, 0, None]  # (K, E, A, 2, n)
    n2 = g[..., 1:3, 1:3] + prior
    det = n2[..., 0, 0] * n2[..., 1, 1] - n2[..., 0, 1] * n2[..., 1, 0]
    inv2 = np.stack([n2[..., 1, 1], -n2[..., 0, 1], -n2[..., 1, 0], n2[..., 0, 0]], -1)
    inv2 = (inv2 / det[..., None]).reshape(n2.shape)
    capped = lam4 * (qq - (qt * (inv2 @ qt)).sum(-2)) * spk
    return (res.reshape(K, E * A, n).transpose(2, 0, 1),
            capped.reshape(K, E * A, n).transpose(2, 0, 1))


def _direct_noise(arrays: ModelArrays, level_arrays: ModelArrays, mask: np.ndarray,
                  flat: np.ndarray, elev: np.ndarray, level: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``noise_terms`` without prepared operators (nothing kept): (cov_t, (q, dof)) of flat
    rotations ``flat`` (n, K) for visibility ``mask``."""
    E, A = len(elev), len(spec.SIN)
    fl = flat.reshape(-1)
    k, rest = np.divmod(fl, E * A)
    e, a = np.divmod(rest, A)
    cov_t = np.empty((len(fl), spec.NUM_JOINTS_3D, 3, 3))
    qd = np.empty((len(fl), 2))
    nobs = 2.0 * float(np.count_nonzero(mask))
    lev = e == level
    for sel, arr, flat_cam in ((lev, level_arrays, True), (~lev, arrays, False)):
        if not sel.any():
            continue
        vis = np.repeat(np.asarray(mask, dtype=bool)[None], int(sel.sum()), axis=0)
        if flat_cam:
            cov, fitted = covariance.joint_cov(arr, vis, k[sel], a[sel], fitted=True)
        else:
            cov, fitted = joint_cov(arr, vis, k[sel], a[sel], elev[e[sel]])
        cov_t[sel], qd[sel] = covariance.fit_noise_terms(cov, fitted, nobs, arr.lam[k[sel]])
    return cov_t.reshape(flat.shape + cov_t.shape[1:]), qd.reshape(flat.shape + (2,))


def fit_direct(arrays: ModelArrays, level_arrays: ModelArrays, mask: np.ndarray,
               ug: np.ndarray, keep_all: bool, elev: np.ndarray, level: int, spike: float
               ) -> tuple[np.ndarray, ...]:
    """``fit_prepared``'s outputs for people ``ug`` (n, 29) sharing visibility ``mask``
    whose pattern is not prepared: every rotation's residual solved directly
    (``direct_residuals``), the chosen rotations' coefficients by the plain solve
    (``solve_forms``, as ``ElevOps.coefficients`` and ``capped_forms``), the covariances'
    terms computed (nothing is kept)."""
    n = len(ug)
    K = arrays.num_components
    E, A = len(elev), len(spec.SIN)
    r, rc = direct_residuals(arrays, mask, ug, elev, spike)
    best = r.argmin(-1)  # (n, K)
    rb = np.take_along_axis(r, best[..., None], -1)[..., 0]
    koff = np.arange(K) * (E * A)

    def coefs(flat: np.ndarray, cap: float | None) -> np.ndarray:  # (m,) -> (m, 5 + B, 29)
        k, rest = np.divmod(flat, E * A)
        e, a = np.divmod(rest, A)
        x, prior, tmap = design_at(arrays, mask, elev, k, e, a)
        return solve_forms(x, prior, tmap, arrays.lam[k], cap)[1]

    a = (coefs((best + koff).reshape(-1), None).reshape(n, K, -1, ug.shape[1])
         @ ug[:, None, :, None])[..., 0]
    cp = a[..., 0] > spec.SCALE_CAP
    if cp.any():
        i, k = np.nonzero(cp)
        rr = rc[i, k]  # (m, E A)
        j = rr.argmin(-1)
        r[i, k] = rr
        best[i, k] = j
        rb[i, k] = rr[np.arange(len(i)), j]
        a[i, k] = (coefs(j + k * (E * A), spec.SCALE_CAP) @ ug[i, :, None])[..., 0]
    ei, ai = np.divmod(best, A)
    cov_t, qd = _direct_noise(arrays, level_arrays, mask, best + koff, elev, level)
    return (a[..., :-1], rb, ai, ei, a[..., -1], cp, (r if keep_all else None), cov_t, qd)

"""``ModelArrays``: the 3D model's parameters in the form the fit reads them.

One frozen object per model (``PoseModel3D.arrays``), numpy float64 and read-only: the
mixture's parameters ``mu``, ``e``, ``sigma`` themselves and what the fit derives from them
once (the basis and mean rows of the 14 observed joints, the priors, the log-determinants,
the rotated basis of step 5.1). Every module of the fit takes one of these; none reads the
model's own attributes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from poseviewer.lifting import spec


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.flags.writeable = False
    return a


def rotated_basis(mu: np.ndarray, ext: np.ndarray, sin: np.ndarray, cos: np.ndarray
                  ) -> np.ndarray:
    """(K, A, 4 + B, 51) per component and angle: coefficients a = (a_0 = scale, a_1..)
    -> the spec's step-5.1 pose U(theta)^T (mu a_0 + sum_i a_i E_i), rows x, y, z of 17
    joints flattened; with a_0 < 0 (always after step 3's cap) this is
    U^T (mu + sum c_i E_i) (-|s|), c = a / a_0: one matrix product per person."""
    k = mu.shape[0]
    m = np.concatenate([mu.reshape(k, 1, -1), ext], axis=1)  # (K, 4 + B, 51)
    j = spec.NUM_JOINTS_3D
    mx, my, mz = m[..., :j], m[..., j:2 * j], m[..., 2 * j:]
    s, c = sin[None, :, None, None], cos[None, :, None, None]
    out = np.empty((k, len(sin)) + m.shape[1:])
    out[..., :j] = s * mx[:, None] + c * my[:, None]
    out[..., j:2 * j] = -c * mx[:, None] + s * my[:, None]
    out[..., 2 * j:] = mz[:, None]
    return out


@dataclass(frozen=True)
class ModelArrays:
    """The parameters of a mixture of K probabilistic PCA models with B basis vectors and
    what the fit derives from them (numpy float64, read-only; J = 14 observed joints in
    ``spec.OBS_SLOTS`` order)."""

    mu: np.ndarray  #: (K, 3, 17) mean poses, rows x, y, z
    e: np.ndarray  #: (K, B, 3, 17) orthonormal bases
    sigma: np.ndarray  #: (K, B + 1) basis regulariser weights, then the data weight
    ex: np.ndarray  #: (K, J, B) basis rows x at the observed joints
    ey: np.ndarray  #: (K, J, B) basis rows y
    ez: np.ndarray  #: (K, J, B) basis rows z
    mux: np.ndarray  #: (K, J) mean rows x at the observed joints
    muy: np.ndarray  #: (K, J)
    muz: np.ndarray  #: (K, J)
    rho: np.ndarray  #: (K, B) (5.2 sigma_i / lambda_d)^2: the basis prior over the data weight
    lam: np.ndarray  #: (K,) lambda_d, the data weight
    lgdet: np.ndarray  #: (K,) the log-determinant term of step 4
    ext: np.ndarray  #: (K, 3 + B, 51) the columns E_1 .. E_{3+B}, rows x, y, z flattened
    mrot: np.ndarray  #: (K A, 4 + B, 51) ``rotated_basis``, flat (component, angle)
    head_top: float = 0.0
    """The observed head slot's rows: head + head_top x (head - thorax) (0: H36M's head)."""

    @classmethod
    def derive(cls, mu: np.ndarray, e: np.ndarray, sigma: np.ndarray) -> ModelArrays:
        """Everything the fit reads, from checked (K, 3, 17), (K, B, 3, 17), (K, B + 1)."""
        mu, e, sigma = _frozen(mu), _frozen(e), _frozen(sigma)
        k, b = e.shape[:2]
        obs = spec.OBS_SLOTS
        lam = sigma[:, b]
        ext = np.zeros((k, 3 + b, 3, spec.NUM_JOINTS_3D))
        ext[:, 0, 0] = 1.0
        ext[:, 1, 1] = 1.0
        ext[:, 2, 0] = 1.0
        ext[:, 3:] = e
        ext = ext.reshape(k, 3 + b, -1)
        lgdet = (-np.log(sigma[:, :b])).sum(1) + (-np.log(lam)) * (
            3 * spec.NUM_JOINTS_3D - 3 - b)
        mrot = rotated_basis(mu, ext, spec.SIN, spec.COS)
        return cls(
            mu=mu, e=e, sigma=sigma,
            ex=_frozen(e[:, :, 0, obs].swapaxes(1, 2)), ey=_frozen(e[:, :, 1, obs].swapaxes(1, 2)),
            ez=_frozen(e[:, :, 2, obs].swapaxes(1, 2)),
            mux=_frozen(mu[:, 0, obs]), muy=_frozen(mu[:, 1, obs]), muz=_frozen(mu[:, 2, obs]),
            rho=_frozen((spec.SIGMA_FACTOR * sigma[:, :b] / lam[:, None]) ** 2),
            lam=_frozen(lam), lgdet=_frozen(lgdet), ext=_frozen(ext),
            mrot=_frozen(mrot.reshape((-1,) + mrot.shape[2:])))

    @property
    def num_components(self) -> int:
        """K."""
        return int(self.mu.shape[0])

    @property
    def num_basis(self) -> int:
        """B."""
        return int(self.e.shape[1])

    def with_head_top(self, a: float) -> ModelArrays:
        """The same model with the observed head slot's rows at head + a (head - thorax)
        (LSP's head top for the elevation grid's fit, beyond the head along the neck; ``a``
        0: these arrays)."""
        a = float(a)
        if a == self.head_top:
            return self
        i = int(np.flatnonzero(spec.OBS_SLOTS == spec.HEAD_SLOT)[0])
        h, n = spec.HEAD_SLOT, spec.THORAX_SLOT
        rows = {}
        for r, name in enumerate("xyz"):
            base = getattr(self, "e" + name).copy()
            base[:, i] = (1.0 + a) * self.e[:, :, r, h] - a * self.e[:, :, r, n]
            rows["e" + name] = _frozen(base)
            m = getattr(self, "mu" + name).copy()
            m[:, i] = (1.0 + a) * self.mu[:, r, h] - a * self.mu[:, r, n]
            rows["mu" + name] = _frozen(m)
        return dataclasses.replace(self, head_top=a, **rows)

    def component(self, k: int) -> ModelArrays:
        """Component ``k`` alone (K = 1) of the per-component arrays the fit's systems use
        (``mrot`` and ``ext`` keep every component)."""
        sl = slice(k, k + 1)
        return dataclasses.replace(self, **{
            name: getattr(self, name)[sl] for name in (
                "mu", "e", "sigma", "ex", "ey", "ez", "mux", "muy", "muz", "rho", "lam",
                "lgdet")})

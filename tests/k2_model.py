"""A K = 2, basis-10 3D model and a result lifted with it: the tests' check that nothing
assumes the shipped model's K, basis size or joint count."""

from __future__ import annotations

import numpy as np

from poseviewer.export import Imported2D, lift_imported
from poseviewer.result import EstimateResult


def model_k2_b10():
    """A random K = 2 mixture with a 10-vector basis."""
    from poseviewer.lifting import PoseModel3D

    rng = np.random.default_rng(0)
    k, b = 2, 10
    e = np.linalg.qr(rng.normal(size=(k, 51, b)))[0].transpose(0, 2, 1).reshape(k, b, 3, 17)
    return PoseModel3D(rng.normal(size=(k, 3, 17)) * 100, e, np.ones((k, b + 1)))


def k2_result() -> EstimateResult:
    """Two imported people (the second with 3 hidden joints) lifted with ``model_k2_b10``."""
    rng = np.random.default_rng(1)
    joints = rng.uniform(50, 400, size=(2, 14, 2))
    vis = np.ones((2, 14), bool)
    vis[1, :3] = False
    item = Imported2D(joints_2d=joints, visible=vis, confidence=vis.astype(float),
                      boxes=np.array([[40.0, 40, 410, 410]] * 2), image=None,
                      image_size=(480, 480), source="test")
    return lift_imported(item, model_k2_b10())

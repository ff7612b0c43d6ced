"""Any PoseBackend drives the Estimator; fits move to the image one affine per person."""

from __future__ import annotations

import numpy as np
from k2_model import model_k2_b10

from poseviewer.result import COMPONENT_FIELDS, FIT_FIELDS, Fit


class _GridBackend:
    """A PoseBackend in plain numpy: every joint j peaks at map pixel (j % 8, j // 8 + 1)."""

    def __init__(self) -> None:
        from poseviewer.cnn.backend import CropSpec
        from poseviewer.skeleton import CPM14

        self.skeleton = CPM14
        self.input_size = 32
        self.num_stages = 2
        self.joint_reading = "grid"
        self.map_to_crop = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
        self.input_spec = CropSpec(input_size=32, box_fill=1.0)
        self.lifts = False
        self.seen: list[tuple] = []

    def forward(self, crops, on_stage=None, cancel=None):
        from poseviewer.cnn.backend import StageMaps

        n = len(crops)
        self.seen.append(crops.shape)
        xy = np.array([[j % 8, j // 8 + 1] for j in range(14)], dtype=np.float64)
        maps = np.zeros((n, 14, 8, 8), np.float32)
        maps[:, np.arange(14), xy[:, 1].astype(int), xy[:, 0].astype(int)] = 1.0
        out = []
        for t in range(self.num_stages):
            out.append(StageMaps(cnn=maps, fused=maps, projected=None,
                                 joints=np.broadcast_to(xy, (n, 14, 2)).copy(),
                                 confidence=np.ones((n, 14)), visible=np.ones((n, 14), bool)))
            if on_stage is not None:
                on_stage(t, self.num_stages)
        return out

    def info(self):
        return {"name": "grid"}


def test_any_pose_backend_drives_the_estimator() -> None:
    from poseviewer.cnn.backend import PoseBackend
    from poseviewer.estimator import Estimator

    backend = _GridBackend()
    assert isinstance(backend, PoseBackend)
    est = Estimator(backend, model_k2_b10(), device="cpu", detector=None)
    stages: list[tuple] = []
    img = np.zeros((100, 80, 3), np.uint8)
    r = est.estimate(img, boxes=[[8, 10, 72, 74], [0, 0, 32, 32]],
                     on_stage=lambda t, n: stages.append((t, n)))
    assert backend.seen == [(2, 32, 32, 3)] and stages == [(0, 2), (1, 2)]
    assert r.model["name"] == "grid" and r.num_stages == 2
    # box 64 px -> crop 32 px (box_fill 1): the crop covers the box, 2 image px per crop
    # px, 4 crop px per map px: map (0, 0) is the box's top-left corner (8, 10)
    m = r.persons[0].map_to_image
    np.testing.assert_allclose(m, [[8.0, 0.0, 8.0], [0.0, 8.0, 10.0]], atol=1e-9)
    xy = np.array([[j % 8, j // 8 + 1] for j in range(14)], dtype=np.float64)
    np.testing.assert_allclose(r.persons[0].final.joints_2d, xy @ m[:, :2].T + m[:, 2])
    # the post-hoc lifting of every stage and person: the 3D model's own answer (along the
    # person's camera ray, the estimator's fov)
    from poseviewer.camera import lift_along_rays

    fit = r.persons[1].stages[0].fit
    ref = model_k2_b10()
    assert est.elevation_search  # the Estimator's default: the grid
    ref.elevation_search = True
    want = lift_along_rays(ref, r.persons[1].stages[0].joints_2d[None],
                           np.ones((1, 14), bool), r.image_size, est.fov)
    assert est.fov > 0
    np.testing.assert_allclose(fit.pose_3d, want.pose_3d, atol=1e-9)


def test_fits_move_to_the_image_one_affine_per_person_at_once(k2_result) -> None:
    """Fit.to_image with (N, 2, 3) affines equals moving each person through its own."""
    fit = Fit.concat([p.final.fit for p in k2_result.persons])
    m = np.array([[[2.0, 0, 10], [0, 2.0, -5]], [[0.5, 0, 100], [0, 0.5, 7]]])
    together = fit.to_image(m)
    for i in range(2):
        alone = fit.select([i]).to_image(m[i])
        for spec in FIT_FIELDS:
            a = getattr(together, spec.name)
            if a is not None or not spec.optional:
                np.testing.assert_allclose(a[i : i + 1], getattr(alone, spec.name),
                                           rtol=0, atol=1e-9)
        for spec in COMPONENT_FIELDS:
            a = getattr(together.components, spec.name)
            if a is not None:
                np.testing.assert_allclose(a[i : i + 1], getattr(alone.components, spec.name),
                                           rtol=0, atol=1e-9)
    # a hand-checked point: person 1's first 2D joint through x' = 0.5 x + 100
    x0 = fit.joints_2d[1, 0]
    np.testing.assert_allclose(together.joints_2d[1, 0], [0.5 * x0[0] + 100, 0.5 * x0[1] + 7])

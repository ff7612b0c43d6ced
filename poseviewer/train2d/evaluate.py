"""PCK@0.2 of the 2D network on the validation split, per joint and per stage.

Crops are the training crops without augmentation (a square box of 1.6 x the labelled
joints' extent around their centre), so the score measures the network, not a detector.
A joint is correct when its prediction lies within ``alpha`` x torso size of the label; the
torso size is the distance between the left shoulder and the right hip. Unlabelled joints
(v = 0) and people whose torso size is undefined (either joint unlabelled) are excluded.
Joints are the ones each stage reports (``LiftingCPM.read`` on the stage's output maps, the
fused maps when fusion is active), as in the Estimator, the viewer and the exports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from poseviewer.cnn.lifting_cpm import LiftingCPM
from poseviewer.skeleton import CPM14
from poseviewer.train2d.augment import make_batch
from poseviewer.train2d.data import Cache
from poseviewer.train2d.targets import normalise

LSHO = CPM14.index("left_shoulder")
RHIP = CPM14.index("right_hip")


def pck(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, alpha: float = 0.2
        ) -> tuple[np.ndarray, np.ndarray]:
    """Correct flags and the evaluated mask, both (..., N, J).

    pred: (..., N, J, 2), gt: (N, J, 2), visible: (N, J). A joint counts when it is labelled
    and its person's torso size (|left shoulder - right hip|) is defined and positive.
    """
    torso = np.linalg.norm(gt[:, LSHO] - gt[:, RHIP], axis=-1)
    ok = visible[:, LSHO] & visible[:, RHIP] & (torso > 0)
    evaluated = visible & ok[:, None]
    dist = np.linalg.norm(pred - gt, axis=-1)
    correct = (dist <= alpha * torso[:, None]) & evaluated
    return correct, np.broadcast_to(evaluated, correct.shape)


@dataclass
class PCKReport:
    """PCK per stage and joint (fractions); ``mean`` averages over all evaluated joints."""

    per_joint: np.ndarray
    """(T, J) fraction correct per stage and joint."""
    mean: np.ndarray
    """(T,) over all evaluated joints of each stage."""
    count: np.ndarray
    """(J,) evaluated joints per joint."""
    people: int
    """People with a defined torso size."""
    fusion: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict keyed by joint names."""
        return {
            "fusion": self.fusion,
            "people": self.people,
            "mean_per_stage": [round(float(v), 4) for v in self.mean],
            "per_joint_per_stage": [
                {n: round(float(v), 4) for n, v in zip(CPM14.joints, row, strict=True)}
                for row in self.per_joint],
            "count_per_joint": {n: int(c) for n, c in zip(CPM14.joints, self.count, strict=True)},
            **self.extra,
        }

    def table(self) -> str:
        """Markdown table: one row per joint, one column per stage."""
        t = self.per_joint.shape[0]
        lines = ["| joint | " + " | ".join(f"stage {i + 1}" for i in range(t)) + " |",
                 "|---|" + "---:|" * t]
        for j, name in enumerate(CPM14.joints):
            lines.append(f"| {name} | " + " | ".join(
                f"{self.per_joint[s, j]:.3f}" for s in range(t)) + " |")
        lines.append("| **mean** | " + " | ".join(f"**{v:.3f}**" for v in self.mean) + " |")
        return "\n".join(lines)


@torch.no_grad()
def predict_stages(model: LiftingCPM, crops: np.ndarray, batch_size: int = 50,
                   confidence: bool = False, stages: int | None = None
                   ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(N, S, S, 3) float 0..255 RGB crops -> (T, N, J, 2) joints in crop pixels per stage,
    as each stage reports them (read from its output maps: the fused maps when fusion is
    active; the same reading as the Estimator's); with ``confidence`` also (T, N, J)
    confidences. ``stages``: run only the first ``stages`` (T = stages); None: all."""
    cfg = model.config
    outs, confs = [], []
    was_training = model.training
    model.eval()
    try:
        for k in range(0, len(crops), batch_size):
            x = normalise(crops[k:k + batch_size], cfg.norm_scale, cfg.norm_offset,
                          cfg.channel_order)
            res = model(x, read_joints=True, stages=stages)
            per_stage = [(st.joints.float() * cfg.stride).numpy() for st in res.stages]
            confs.append(np.stack([st.confidence.float().numpy() for st in res.stages]))
            outs.append(np.stack(per_stage))
    finally:
        model.train(was_training)
    joints = np.concatenate(outs, axis=1)
    return (joints, np.concatenate(confs, axis=1)) if confidence else joints


def eval_crops(cache: Cache, idx: np.ndarray, input_size: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluation crops (no augmentation) for cache rows ``idx``."""
    rng = np.random.default_rng(0)
    return make_batch(rng, cache.images, cache.joints, cache.visible, np.asarray(idx),
                      cache.enlarge, input_size, None)


def evaluate(model: LiftingCPM, cache: Cache, idx: np.ndarray, alpha: float = 0.2,
             batch_size: int = 50, crops: tuple | None = None,
             stages: int | None = None) -> PCKReport:
    """PCK@alpha of every stage on cache rows ``idx`` (fusion as the model is set up;
    ``stages``: only the first ``stages``, None: all)."""
    crops_, gt, vis = crops if crops is not None else eval_crops(
        cache, idx, model.config.input_size)
    pred = predict_stages(model, crops_, batch_size, stages=stages)
    correct, evaluated = pck(pred, gt, vis, alpha)
    per_joint = correct.sum(1) / np.maximum(evaluated.sum(1), 1)
    mean = correct.sum((1, 2)) / np.maximum(evaluated.sum((1, 2)), 1)
    torso_ok = vis[:, LSHO] & vis[:, RHIP]
    return PCKReport(per_joint=per_joint, mean=mean, count=evaluated[0].sum(0),
                     people=int(torso_ok.sum()), fusion=model.fusion_active,
                     extra={"alpha": alpha, "images": int(len(gt))})


def eval_crops_from_photos(root: str, idx: np.ndarray, input_size: int, box: float = 1.6
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluation crops cut straight from the LSP-extended photos (no cache): a square
    box of ``box`` x the labelled joints' extent around their centre, resized with one
    linear warp (mid-grey outside the photo). Returns (crops float32 0..255 RGB, joints in
    crop pixels, visible)."""
    import cv2

    from poseviewer.train2d.data import (
        PAD_VALUE,
        apply_affine,
        crop_affine,
        load_annotations,
        person_box,
    )

    ann = load_annotations(root)
    crops, xy, vis = [], [], []
    for i in np.asarray(idx):
        path = f"{root}/images/{ann.names[i]}"
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {path}")
        centre, extent = person_box(ann.joints[i], ann.visible[i])
        m = crop_affine(centre, box * extent, input_size)
        crop = cv2.warpAffine(bgr, m, (input_size, input_size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3)
        crops.append(crop[..., ::-1].astype(np.float32))
        xy.append(apply_affine(m, ann.joints[i]).astype(np.float32))
        vis.append(ann.visible[i])
    return np.stack(crops), np.stack(xy), np.stack(vis)

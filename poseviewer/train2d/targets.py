"""Gaussian belief-map targets and the masked multi-stage (intermediate supervision) loss."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from poseviewer.cnn.ops import gaussian_maps


def normalise(crops: np.ndarray, norm_scale: float, norm_offset: float,
              channel_order: str = "RGB") -> Tensor:
    """(B, S, S, 3) float 0..255 RGB -> (B, 3, S, S) float32 network input."""
    x = crops[..., ::-1] if channel_order == "BGR" else crops
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2)
    return t * float(norm_scale) + float(norm_offset)


def belief_targets(joints: Tensor, visible: Tensor, map_size: int, stride: int,
                   sigma: float) -> tuple[Tensor, Tensor]:
    """Targets (B, J + 1, h, w) and channel mask (B, J + 1).

    joints: (B, J, 2) input-pixel xy; a crop pixel p lies at map coordinate p / stride.
    Joint maps are Gaussians exp(-d^2 / (2 sigma^2)) (sigma in map pixels) for visible
    joints and zero otherwise; the background is 1 - max over the joint maps. The mask is 0
    for unlabelled joints (no loss there) and 1 for labelled joints and the background.
    """
    maps = gaussian_maps(joints / stride, map_size, map_size, sigma)
    maps = maps * visible[..., None, None].to(maps.dtype)
    bg = 1.0 - maps.amax(dim=1, keepdim=True)
    mask = torch.cat([visible.to(maps.dtype), torch.ones_like(visible[:, :1], dtype=maps.dtype)],
                     dim=1)
    return torch.cat([maps, bg], dim=1), mask


def stage_losses(preds: list[Tensor], target: Tensor, mask: Tensor) -> Tensor:
    """(T,) per-stage loss: masked squared error summed over maps, averaged over the batch."""
    m = mask[:, :, None, None]
    return torch.stack([(((p - target) ** 2) * m).sum() / p.shape[0] for p in preds])


def softmax_stage_losses(stages: list, target: Tensor, mask: Tensor, fused: bool) -> Tensor:
    """(T,) per-stage spatial cross-entropy for ``map_activation='softmax'`` networks.

    Each labelled joint's target Gaussian (B, J, h, w) is normalised to sum 1 (joints whose
    Gaussian lies outside the map are masked); the prediction is the stage's logit map
    under a spatial softmax, or with ``fused`` the stage's fused map normalised to sum 1
    (``f / sum f``; equal to the softmax where nothing was fused). Summed over joints,
    averaged over the batch.
    """
    total = target.sum((-2, -1))
    m = mask * (total > 1e-3).to(mask.dtype)
    q = target / total.clamp_min(1e-12)[..., None, None]
    out = []
    J = target.shape[1]
    for st in stages:
        if fused and st.lifted is not None and bool(st.lifted.any()):
            f = st.fused[:, :J].float()
            logp = f.clamp_min(1e-30).log() - f.sum((-2, -1), keepdim=True).log()
        else:
            z = st.logits.float()
            logp = z.flatten(2).log_softmax(-1).view_as(z)
        ce = -(q * logp).sum((-2, -1))
        out.append((ce * m).sum() / target.shape[0])
    return torch.stack(out)

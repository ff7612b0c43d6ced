"""Batch normalisation for training only, folded into the convolutions afterwards.

The lifting CPM has no normalisation layers (the paper's and the release's design). Trained
from scratch without them, the network sits for thousands of steps on the trivial answer
(all background). During training every conv except each stage's output conv is followed
by a BatchNorm; :func:`fold_batchnorm` folds the running statistics into the conv weights,
giving an exactly equivalent plain ``LiftingCPM`` (in eval mode) for shipping.
"""

from __future__ import annotations

import torch
from torch import nn

from poseviewer.cnn.lifting_cpm import LiftingCPM


def output_layers(model: LiftingCPM) -> set[str]:
    """Names of each stage's last (map-producing) conv."""
    return {names[-1] for names in [model._stage1, *model._stages]}


def add_batchnorm(model: LiftingCPM) -> LiftingCPM:
    """Wrap every hidden conv as Sequential(conv, BatchNorm2d), He-initialise hidden convs
    and give output convs a small init (in place; returns the model)."""
    outs = output_layers(model)
    for name in list(model.layers.keys()):
        conv = model.layers[name]
        if not isinstance(conv, nn.Conv2d):
            continue
        nn.init.zeros_(conv.bias)
        if name in outs:
            nn.init.normal_(conv.weight, std=0.01)
            continue
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        model.layers[name] = nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels))
    return model


def has_batchnorm(model: LiftingCPM) -> bool:
    """True when some layer is a (conv, BatchNorm) pair."""
    return any(isinstance(m, nn.Sequential) for m in model.layers.values())


@torch.no_grad()
def fold_batchnorm(model: LiftingCPM) -> LiftingCPM:
    """A plain LiftingCPM (same config) equal to ``model`` in eval mode."""
    plain = LiftingCPM(model.config)
    for name, layer in model.layers.items():
        dst = plain.layers[name]
        if isinstance(layer, nn.Sequential):
            conv, bn = layer[0], layer[1]
            g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            dst.weight.copy_(conv.weight * g[:, None, None, None])
            dst.bias.copy_((conv.bias - bn.running_mean) * g + bn.bias)
        else:
            dst.weight.copy_(layer.weight)
            dst.bias.copy_(layer.bias)
    if model.fusion_logit is not None:
        plain.fusion_logit.copy_(model.fusion_logit)
    return plain.eval()

"""Training and evaluation of the 2D network (the lifting CPM) on LSP-extended.

``data``: annotations, the fixed validation split and the pre-cropped uint8 cache;
``augment``: one affine warp per sample (scale, full-circle rotation, flip, colour jitter);
``targets``: Gaussian belief-map targets and the masked multi-stage loss;
``loop``: the training loop (checkpoints, resume, log, plot);
``evaluate``: PCK@0.2 per joint and per stage, with and without fusion.
"""

from __future__ import annotations

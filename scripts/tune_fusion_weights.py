"""Fine-tune only the fusion weights of a finished ``train-2d`` run (the last recipe step).

The 2D network and its BatchNorm statistics stay frozen; our 3D model is in the loop; the
loss is the per-stage loss on the fused maps. This is how the shipped
``cpm_default.safetensors`` got its fusion weights (see its model card):

    .venv/bin/python scripts/tune_fusion_weights.py RUN_DIR 200 0.05 [--cache CACHE_DIR]

writes ``RUN_DIR/tuned.safetensors``; ``scripts/ship_default_2d.py`` then ships it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from safetensors.torch import load_file

from poseviewer.cnn import LiftingCPM, read_cpm_metadata, save_cpm
from poseviewer.lifting import load_pose_model
from poseviewer.paths import MODELS_DIR
from poseviewer.train2d.augment import AugmentConfig, make_batch
from poseviewer.train2d.bn import add_batchnorm, fold_batchnorm
from poseviewer.train2d.data import load_cache, split_indices
from poseviewer.train2d.targets import belief_targets, normalise, stage_losses


def main() -> None:
    """Run the fusion-weight tuning."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("steps", type=int)
    ap.add_argument("lr", type=float)
    ap.add_argument("--cache", default="/work/scratch/train2d/cache192")
    ap.add_argument("--seed", type=int, default=2017)
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = read_cpm_metadata(f"{args.run}/last.safetensors")["config"]
    m = add_batchnorm(LiftingCPM(cfg))
    m.load_state_dict(load_file(f"{args.run}/last_train.safetensors"))
    m.attach_pose_model(load_pose_model(str(MODELS_DIR / "pose3d_default.safetensors")))
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    m.fusion_logit.requires_grad_(True)
    opt = torch.optim.Adam([m.fusion_logit], lr=args.lr)
    cache = load_cache(args.cache)
    train_idx, _ = split_indices(len(cache.images), 1000, args.seed)
    rng = np.random.default_rng([args.seed, 999])
    aug = AugmentConfig()
    t0, losses = time.time(), []
    for s in range(args.steps):
        idx = rng.choice(train_idx, 16, replace=False)
        crops, xy, vis = make_batch(rng, cache.images, cache.joints, cache.visible, idx,
                                    cache.enlarge, cfg.input_size, aug)
        x = normalise(crops, cfg.norm_scale, cfg.norm_offset)
        tgt, mask = belief_targets(torch.from_numpy(xy), torch.from_numpy(vis), cfg.map_size,
                                   cfg.stride, 1.0)
        out = m(x)
        loss = stage_losses([st.fused for st in out.stages], tgt, mask).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if s % 25 == 24:
            w = torch.sigmoid(m.fusion_logit).mean(1).detach().numpy().round(3)
            print(s + 1, round(float(np.mean(losses[-25:])), 2), w, round(time.time() - t0),
                  flush=True)
    w = torch.sigmoid(m.fusion_logit).detach()
    print("weights per stage (joints..., background):", w.numpy().round(3).tolist())
    save_cpm(fold_batchnorm(m), f"{args.run}/tuned.safetensors",
             metadata={"fusion_tuning": {"steps": args.steps, "lr": args.lr, "batch": 16}})
    print("saved")


if __name__ == "__main__":
    main()

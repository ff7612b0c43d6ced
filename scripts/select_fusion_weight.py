"""Choose the default network's fusion weight on training photos (never the validation split).

    .venv/bin/python scripts/select_fusion_weight.py RUN/last.safetensors OUT.safetensors \
        [--images 400] [--weights 0.85 0.9 0.95 0.99] [--flip-test]
        [--pose-model PATH] [--elevation-search]

The fusion weights learned in the loop (w_t = weight of the CNN's maps) are compared with
one common w for every stage, by the PCK@0.2 of the last stage with fusion on, on the first
``--images`` training photos of the fixed split (crops cut from the photos as in the
evaluation). The best is written to OUT (the learned ones when they win) and every figure
is printed, for the model card. ``--flip-test``: evaluate (and save) with the mirror
test-time augmentation on, as the default network runs. ``--elevation-search``: the 3D
model in the loop searches the camera elevation and observes LSP's head top (the fit of
``poseviewer estimate``, its default); the selection is then for that fit.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from poseviewer.cnn import load_cpm, save_cpm
from poseviewer.lifting import load_pose_model
from poseviewer.paths import shared_path
from poseviewer.train2d.data import load_annotations, split_indices
from poseviewer.train2d.evaluate import eval_crops_from_photos, pck, predict_stages


def main() -> None:
    """Evaluate the candidates and write the best."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--weights", dest="cands", type=float, nargs="+",
                    default=[0.85, 0.9, 0.95, 0.99])
    ap.add_argument("--flip-test", action="store_true",
                    help="mirror test-time augmentation on (saved in the config)")
    ap.add_argument("--pose-model", default=None,
                    help="the 3D model in the loop (default: the bundled one)")
    ap.add_argument("--elevation-search", action="store_true",
                    help="the 3D model searches the camera elevation (and LSP's head top)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = shared_path("data", "lspet")
    train, _ = split_indices(len(load_annotations(root).names), 1000, 2017)
    idx = np.sort(train)[: args.images]
    model = load_cpm(args.weights)
    if args.flip_test:
        model.set_flip_test(True)
    crops, gt, vis = eval_crops_from_photos(str(root), idx, model.config.input_size)
    pose_model = load_pose_model(args.pose_model)
    pose_model.elevation_search = args.elevation_search
    if args.elevation_search:  # every pattern of the photos kept: prepared once each
        pose_model.pattern_cache.max_patterns = 10_000
        pose_model.pattern_cache.max_bytes = 1500 * 2**20
    model.attach_pose_model(pose_model)
    learned = model.fusion_logit.detach().clone()
    rows = []
    lw = torch.sigmoid(learned)
    cands = [w for w in args.cands if not torch.allclose(lw, torch.full_like(lw, w), atol=1e-4)]
    if len(cands) < len(args.cands):  # the learned weights stand for that candidate
        print(f"learned weights = {sorted(set(args.cands) - set(cands))}: evaluated once")
    for name, logits in [("learned", learned)] + [
            (f"{w:g}", torch.full_like(learned, math.log(w / (1 - w)))) for w in cands]:
        with torch.no_grad():
            model.fusion_logit.copy_(logits)
        correct, evaluated = pck(predict_stages(model, crops), gt, vis)
        per_stage = correct.sum((1, 2)) / evaluated.sum((1, 2))
        rows.append({"weights": name, "w": torch.sigmoid(logits).flatten().tolist(),
                     "pck_per_stage": [round(float(v), 4) for v in per_stage]})
        print(json.dumps(rows[-1]))
    model.attach_pose_model(None)
    correct, evaluated = pck(predict_stages(model, crops), gt, vis)
    plain = [round(float(v), 4) for v in correct.sum((1, 2)) / evaluated.sum((1, 2))]
    print(json.dumps({"fusion": "off", "pck_per_stage": plain}))
    best = max(rows, key=lambda r: r["pck_per_stage"][-1])
    with torch.no_grad():
        model.fusion_logit.copy_(torch.logit(torch.tensor(best["w"])).view_as(learned))
    save_cpm(model, args.out, metadata={"fusion_selection": {
        "images": int(len(idx)), "candidates": rows, "fusion_off": plain,
        "chosen": best["weights"], "flip_test": bool(model.config.flip_test),
        "elevation_search": bool(args.elevation_search)}})
    print("chosen:", best["weights"])


if __name__ == "__main__":
    main()

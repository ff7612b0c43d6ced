"""The training loop of the default 2D network.

Plain multi-stage CPM for the first ``epochs - fusion_epochs`` epochs (fast), then the
last ``fusion_epochs`` with our 3D model inside the loop: every stage lifts its joints,
draws the projected belief maps and fuses them with learned weights (the loss then applies
to the fused maps). Adam, linear warm-up then cosine decay; a checkpoint every epoch
(``last.safetensors`` + ``last_state.pt``), ``resume``; a JSON-lines log and a PNG plot.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from poseviewer.atomic import atomic_write_bytes, atomic_write_text, atomic_write_with
from poseviewer.cnn.lifting_cpm import LiftingCPM, count_parameters
from poseviewer.cnn.weights import load_cpm, save_cpm
from poseviewer.errors import ModelError
from poseviewer.lifting import PoseModel3D, load_pose_model
from poseviewer.train2d.augment import AugmentConfig, make_batch
from poseviewer.train2d.bn import add_batchnorm, fold_batchnorm, has_batchnorm
from poseviewer.train2d.data import Cache, load_cache, split_indices
from poseviewer.train2d.evaluate import eval_crops, evaluate
from poseviewer.train2d.presets import PRESETS
from poseviewer.train2d.targets import (
    belief_targets,
    normalise,
    softmax_stage_losses,
    stage_losses,
)


@dataclass
class TrainConfig:
    """Settings of one training run (saved as ``train_config.json`` in the run folder)."""

    cache_dir: str
    out_dir: str
    preset: str = "cpm-default"
    epochs: int = 24
    fusion_epochs: int = 5
    """The last this-many epochs train with fusion (needs ``pose_model``)."""
    pose_model: str | None = None
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 2e-5
    warmup_steps: int = 300
    sigma: float = 1.0
    """Gaussian sigma of the targets, in map pixels."""
    n_val: int = 1000
    seed: int = 2017
    threads: int = 2
    """torch threads; 0 = adaptive: every 100 batches, try 1 and 2 threads for 10 batches
    each and keep the faster (on a shared machine the better choice changes with load)."""
    max_batches: int | None = None
    """Stop each epoch after this many batches (tests, smoke runs)."""
    val_limit: int | None = None
    """Evaluate on the first this-many validation images only (tests, smoke runs)."""
    progress: bool = True
    time_budget_min: float | None = None
    """If set, train for this many minutes of training time (validation excluded) instead
    of ``epochs`` (then a maximum): the learning rate decays with the fraction of the budget
    used, and fusion starts at the first epoch beginning after ``1 - fusion_fraction``."""
    fusion_fraction: float = 0.22
    batchnorm: bool = True
    """Train with BatchNorm after every hidden conv (folded into the convs when saving)."""
    init: str | None = None
    """Start from this CPM weights file (e.g. ``poseviewer convert-tfjs`` output) instead of
    a fresh ``preset``."""
    trunk_lr: float | None = None
    """Peak learning rate of a pretrained graph trunk (None: ``lr``); it follows the same
    warm-up and decay as ``lr``."""
    fusion_lr: float = 1e-2
    """Peak learning rate of the fusion weights."""
    neighbours: float = 0.0
    """Probability of pasting other people beside and over a training sample
    (``AugmentConfig.neighbours``)."""


class NeedPoseModel(RuntimeError):
    """The fusion epochs are reached but no 3D model was given."""


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def lr_at(step: int, progress: float, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay from ``lr`` to ``min_lr`` with
    the training progress (0..1)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(1.0, max(0.0, progress))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * p))


def training_pose_model(path: str) -> PoseModel3D:
    """Our 3D model for the fusion epochs (``poseviewer.lifting.load_pose_model``), never the
    authors' release; a missing or unreadable file raises ``NeedPoseModel`` naming it."""
    if str(path).endswith(".mat"):
        raise ValueError("the default 2D network must not be trained with the released .mat; "
                         "pass our own 3D model (.safetensors)")
    try:
        return load_pose_model(path)
    except ModelError as exc:
        raise NeedPoseModel(f"cannot load the 3D model for fusion: {exc}") from exc


def train(cfg: TrainConfig, resume: bool = False, log=print) -> Path:
    """Run (or resume) training; returns the run folder. Raises NeedPoseModel when the
    fusion epochs start without a 3D model (resume later with one)."""
    torch.set_num_threads(cfg.threads or 1)
    tuner = _ThreadTuner() if cfg.threads == 0 else None
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = load_cache(cfg.cache_dir)
    train_idx, val_idx = split_indices(len(cache.images), cfg.n_val, cfg.seed)
    if cfg.val_limit:
        val_idx = val_idx[: cfg.val_limit]
    _atomic_write_text(out / "split.json", json.dumps({
        "seed": cfg.seed, "n_val": cfg.n_val,
        "val": [str(cache.names[i]) for i in split_indices(len(cache.images), cfg.n_val,
                                                           cfg.seed)[1]]}))
    _atomic_write_text(out / "train_config.json", json.dumps(asdict(cfg), indent=1))

    state_path, weights_path = out / "last_state.pt", out / "last.safetensors"
    start_epoch, step, trained = 0, 0, 0.0
    train_path = out / "last_train.safetensors"
    if resume and state_path.is_file() and weights_path.is_file():
        model = load_cpm(weights_path)
        if cfg.batchnorm:
            from safetensors.torch import load_file

            model = add_batchnorm(LiftingCPM(model.config))
            model.load_state_dict(load_file(str(train_path)))
        state = torch.load(state_path, weights_only=True)
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])
        trained = float(state.get("trained_seconds", 0.0))
    else:
        model = load_cpm(cfg.init) if cfg.init else LiftingCPM(PRESETS[cfg.preset]())
        if cfg.batchnorm:
            add_batchnorm(model)
        state = None
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(param_groups(model, cfg))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    mcfg = model.config
    log(f"network {mcfg.name}: {count_parameters(model):,} parameters, input "
        f"{mcfg.input_size}, maps {mcfg.map_size}, {mcfg.num_stages} stages; "
        f"train {len(train_idx)}, val {len(val_idx)}; start epoch {start_epoch + 1}")

    per_epoch = len(train_idx) // cfg.batch_size
    if cfg.max_batches:
        per_epoch = min(per_epoch, cfg.max_batches)
    total = per_epoch * cfg.epochs
    budget = cfg.time_budget_min * 60.0 if cfg.time_budget_min else None

    def progress() -> float:
        return trained / budget if budget else step / max(1, total)
    aug = AugmentConfig(neighbours=cfg.neighbours)
    val_crops = eval_crops(cache, val_idx, mcfg.input_size)
    pose_model = None

    for epoch in range(start_epoch, cfg.epochs):
        if budget and trained >= budget:
            break
        if budget:
            fusion = cfg.fusion_fraction > 0 and progress() >= 1 - cfg.fusion_fraction
        else:
            fusion = epoch >= cfg.epochs - cfg.fusion_epochs and cfg.fusion_epochs > 0
        if fusion and pose_model is None:
            if not cfg.pose_model:
                raise NeedPoseModel(
                    f"epoch {epoch + 1} trains with fusion and needs our 3D model: resume "
                    "with --pose-model resources/models/pose3d_default.safetensors")
            pose_model = training_pose_model(cfg.pose_model)
        model.attach_pose_model(pose_model if fusion else None)
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(train_idx)
        t0 = time.time()
        done = 0
        sums = np.zeros(mcfg.num_stages)
        it = range(per_epoch)
        if cfg.progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"epoch {epoch + 1}/{cfg.epochs}" + (" fusion" if fusion else ""),
                      unit="batch", file=sys.stderr, mininterval=5.0)
        model.train()
        for b in it:
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            tb = time.time()
            loss_val = _step(model, opt, cache, idx, rng, aug, cfg, lr_at(step, progress(), cfg),
                             fusion)
            trained += time.time() - tb
            if tuner is not None:
                tuner.after_batch(time.time() - tb)
            sums += loss_val
            step += 1
            done += 1
            if budget and trained >= budget:
                break
            if cfg.progress and b % 20 == 0:
                it.set_postfix(loss=f"{loss_val.sum():.3f}", refresh=False)
        train_seconds = time.time() - t0
        rec: dict[str, Any] = {
            "epoch": epoch + 1, "fusion": fusion, "step": step,
            "batches": done, "lr": lr_at(step - 1, progress(), cfg),
            "train_seconds": round(train_seconds, 1), "progress": round(progress(), 4),
            "loss": float(sums.sum() / max(done, 1)),
            "loss_per_stage": [round(float(v), 4) for v in sums / max(done, 1)],
        }
        t1 = time.time()
        model.attach_pose_model(None)
        rep = evaluate(model, cache, val_idx, crops=val_crops)
        rec["val_pck"] = [round(float(v), 4) for v in rep.mean]
        if fusion:
            model.attach_pose_model(pose_model)
            rep_f = evaluate(model, cache, val_idx, crops=val_crops)
            rec["val_pck_fusion"] = [round(float(v), 4) for v in rep_f.mean]
            if model.fusion_logit is not None:
                rec["fusion_weight_mean"] = [round(float(v), 3) for v in
                                             model.fusion_weights().detach().mean(1)]
        rec["val_seconds"] = round(time.time() - t1, 1)
        plain = fold_batchnorm(model) if has_batchnorm(model) else model
        if has_batchnorm(model):
            _save_tensors(train_path, model.state_dict())
        save_cpm(plain, out / f"epoch{epoch + 1:03d}.safetensors", metadata={"epoch": epoch + 1})
        save_cpm(plain, weights_path, metadata={"epoch": epoch + 1, "val_pck": rec["val_pck"]})
        _save_state(state_path, {"optimizer": opt.state_dict(), "epoch": epoch, "step": step,
                                "trained_seconds": trained})
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        log(json.dumps(rec))
        try:
            plot_log(out / "log.jsonl", out / "training.png")
        except ImportError:
            log("matplotlib is not installed: no plot")
    return out


class _ThreadTuner:
    """Switches torch between 1 and 2 threads, keeping whichever trains faster lately."""

    def __init__(self, period: int = 100, probe: int = 10) -> None:
        self.period, self.probe = period, probe
        self.n = 0
        self.best = 1
        self.times: dict[int, list[float]] = {1: [], 2: []}

    def after_batch(self, seconds: float) -> None:
        phase = self.n % self.period
        current = torch.get_num_threads()
        if phase >= self.period - 2 * self.probe:
            self.times.setdefault(current, []).append(seconds)
        self.n += 1
        phase = self.n % self.period
        if phase == self.period - 2 * self.probe:
            self.times = {1: [], 2: []}
            torch.set_num_threads(1)
        elif phase == self.period - self.probe:
            torch.set_num_threads(2)
        elif phase == 0:
            t1, t2 = self.times[1], self.times[2]
            if t1 and t2:
                self.best = 1 if np.median(t1) <= np.median(t2) else 2
            torch.set_num_threads(self.best)


def param_groups(model: LiftingCPM, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Adam groups: the pretrained graph trunk (``trunk_lr``), the fusion weights
    (``fusion_lr``) and the rest (``lr``); ``base_lr`` is each group's peak rate."""
    trunk, fusion, rest = [], [], []
    for name, p in model.named_parameters():
        (trunk if name.startswith("graph.") else fusion if name == "fusion_logit"
         else rest).append(p)
    groups = [{"params": rest, "base_lr": cfg.lr, "lr": cfg.lr}]
    if trunk:
        lr = cfg.trunk_lr if cfg.trunk_lr is not None else cfg.lr
        groups.append({"params": trunk, "base_lr": lr, "lr": lr})
    if fusion:
        groups.append({"params": fusion, "base_lr": cfg.fusion_lr, "lr": cfg.fusion_lr})
    return groups


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    data = save({k: v.detach().contiguous() for k, v in tensors.items()})
    atomic_write_bytes(path, data)


def _save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write_with(path, lambda f: torch.save(state, f))


def _step(model: LiftingCPM, opt: torch.optim.Optimizer, cache: Cache, idx: np.ndarray,
          rng: np.random.Generator, aug: AugmentConfig, cfg: TrainConfig, lr: float,
          fusion: bool) -> np.ndarray:
    mcfg = model.config
    crops, xy, vis = make_batch(rng, cache.images, cache.joints, cache.visible, idx,
                                cache.enlarge, mcfg.input_size, aug)
    x = normalise(crops, mcfg.norm_scale, mcfg.norm_offset, mcfg.channel_order)
    x = x.contiguous(memory_format=torch.channels_last)
    target, mask = belief_targets(torch.from_numpy(xy), torch.from_numpy(vis), mcfg.map_size,
                                  mcfg.stride, cfg.sigma)
    out = model(x, read_joints=fusion)
    if mcfg.map_activation == "softmax":
        losses = softmax_stage_losses(out.stages, target[:, : mcfg.num_joints],
                                      mask[:, : mcfg.num_joints], fusion)
    else:
        preds = [s.fused if fusion else s.cnn for s in out.stages]
        losses = stage_losses(preds, target, mask)
    for g in opt.param_groups:
        g["lr"] = lr * g.get("base_lr", cfg.lr) / cfg.lr
    opt.zero_grad(set_to_none=True)
    losses.sum().backward()
    opt.step()
    return losses.detach().numpy()


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a run's ``log.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_log(log_path: str | os.PathLike[str], png_path: str | os.PathLike[str]) -> Path:
    """Plot training loss and validation PCK@0.2 per epoch (fusion epochs shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_log(log_path)
    ep = [r["epoch"] for r in recs]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [r["loss"] for r in recs], "o-", label="all stages")
    a1.plot(ep, [r["loss_per_stage"][-1] for r in recs], "s--", label="last stage")
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss (log scale)")
    a1.set_yscale("log")
    a1.set_title("training loss (squared error or spatial cross-entropy)")
    a1.legend()
    stages = len(recs[0]["val_pck"]) if recs else 0
    for s in range(stages):
        a2.plot(ep, [r["val_pck"][s] for r in recs], "o-", label=f"stage {s + 1}",
                alpha=0.5 + 0.5 * (s + 1) / stages)
    fe = [r for r in recs if "val_pck_fusion" in r]
    if fe:
        a2.plot([r["epoch"] for r in fe], [r["val_pck_fusion"][-1] for r in fe], "k*-",
                label=f"stage {stages}, fusion on")
    for r in recs:
        if r.get("fusion"):
            for ax in (a1, a2):
                ax.axvspan(r["epoch"] - 0.5, r["epoch"] + 0.5, color="orange", alpha=0.15)
    a2.axhline(0.80, color="grey", lw=0.8, ls=":", label="goal 0.80")
    a2.set_xlabel("epoch")
    a2.set_ylabel("PCK@0.2")
    a2.set_ylim(0, 1)
    a2.set_title("validation PCK@0.2 (shaded: fusion epochs)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    png = Path(png_path)
    try:
        atomic_write_with(png, lambda f: fig.savefig(f, format="png", dpi=90))
    finally:
        plt.close(fig)
    return png

#!/usr/bin/env python
"""Benchmark the CNNs on this machine (prints figures; not a test).

    .venv/bin/python scripts/bench_cnn.py [--threads 2] [--repeat 3] [--compile]
        [--weights resources/models/cpm_default.safetensors] [--quick]

* the machine's fp32 peak, estimated from a big matmul;
* the release PoseNet per 368 x 368 crop: fp32 (contiguous, channels_last = the Estimator's
  setting, traced + frozen), bf16 autocast, optionally torch.compile; GMAC and GFLOP/s
  reached, the best torch setting and the ratio of the Estimator's fp32 to it (goal <= 1.2);
* the full ``Estimator.estimate`` for one person with per-stage lifting and fusion on (needs
  the 3D model: the bundled one or ../shared's released .mat), and the overhead of lifting +
  fusion over the same estimate with the CNN alone (goal <= 1.15), for the release PoseNet,
  the shipped network's config (its mirror pass included) and the cpm-default preset
  (random weights, every joint made visible so that every stage really lifts);
* bf16 vs fp32 on TRAINED weights (``--weights``, else the bundled default): max |diff| of
  every stage's maps and how far the joints move, in pixels (with the 3D model attached, so
  a fusion model runs as shipped).

``--quick``: one timed run per figure (no extra warm-up), smaller matmul: every figure, less
precise. A summary with the goals is printed at the end. The machine is shared: the script
prints ``uptime`` before and after; run it on a quiet machine for the documented figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _benchutil import uptime  # noqa: E402  (scripts/ is on sys.path when run)

from poseviewer.cnn import LiftingCPM, release_posenet, small_cpu  # noqa: E402
from poseviewer.cnn.config import CPMConfig  # noqa: E402


def gmac(cfg: CPMConfig, size: int | None = None) -> float:
    """Multiply-accumulates of one forward (convs only), in GMAC."""
    size = size or cfg.input_size
    total = 0
    side = size
    conv_iter = iter(cfg.conv_layers())
    for name, _, _ in cfg.trunk:
        if name == "pool":
            side //= 2
            continue
        _, k, cin, cout, _ = next(conv_iter)
        total += side * side * k * k * cin * cout
    for _, k, cin, cout, _ in conv_iter:
        total += side * side * k * k * cin * cout
    return total / 1e9


def timeit(fn, repeat: int, warmup: int = 1) -> float:
    """Median seconds of ``repeat`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_gflops(repeat: int, n: int = 4096) -> float:
    """fp32 matmul GFLOP/s (the machine's practical peak)."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    t = timeit(lambda: a @ b, repeat)
    return 2 * n**3 / t / 1e9


def bench_network(name: str, cfg: CPMConfig, repeat: int, batch: int, use_compile: bool,
                  peak: float) -> dict[str, float]:
    """Seconds per batch for each torch setting (printed per crop with GFLOP/s)."""
    torch.manual_seed(0)
    net = LiftingCPM(cfg).eval()
    s = cfg.input_size
    x = torch.randn(batch, 3, s, s)
    macs = gmac(cfg) * batch
    res: dict[str, float] = {}

    def report(label: str, sec: float) -> None:
        res[label] = sec
        gf = 2 * macs / sec
        print(f"  {name:<16} {label:<28} {sec * 1e3 / batch:9.1f} ms/crop  "
              f"{gf:7.1f} GFLOP/s  ({100 * gf / peak:4.1f}% of matmul peak)")

    with torch.inference_mode():
        report("fp32 contiguous", timeit(lambda: net(x, read_joints=False), repeat))
        net_cl = net.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        report("fp32 channels_last", timeit(lambda: net_cl(x_cl, read_joints=False), repeat))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            report("bf16 autocast channels_last",
                   timeit(lambda: net_cl(x_cl, read_joints=False), repeat))
    # traced + frozen (conv/bias folding, oneDNN layouts)
    try:
        class Wrap(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, inp):
                return self.m(inp, read_joints=False).final.cnn

        with torch.inference_mode():
            traced = torch.jit.trace(Wrap(net_cl).eval(), x_cl, check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            report("fp32 traced+frozen", timeit(lambda: frozen(x_cl), repeat, warmup=2))
    except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
        print(f"  {name:<16} traced+frozen failed: {type(exc).__name__}: {exc}")
    if use_compile:
        try:
            compiled = torch.compile(net_cl)
            with torch.inference_mode():
                t0 = time.perf_counter()
                compiled(x_cl, read_joints=False)
                print(f"  {name:<16} torch.compile first call {time.perf_counter() - t0:.1f} s")
                report("fp32 torch.compile", timeit(lambda: compiled(x_cl, read_joints=False),
                                                    repeat))
        except Exception as exc:  # noqa: BLE001
            print(f"  {name:<16} torch.compile failed: {type(exc).__name__}: {exc}")
    return res


def find_pose_model():
    from poseviewer.paths import MODELS_DIR, shared_path

    for p in (MODELS_DIR / "pose3d_default.safetensors",
              shared_path("reference", "lftd", "prob_model_params.mat")):
        if p.is_file():
            return p
    return None


def bench_estimate(cfg: CPMConfig, repeat: int) -> dict[str, float] | None:
    """Full estimate for one person, fusion on vs the CNN alone: seconds and the ratio."""
    try:
        import poseviewer.lifting  # noqa: F401
    except ImportError:
        print("  (poseviewer.lifting not available: skipping the lifting/fusion figures)")
        return None
    from poseviewer.estimator import Estimator
    from poseviewer.lifting import load_pose_model

    path = find_pose_model()
    if path is None:
        print("  (no 3D model found: skipping the lifting/fusion figures)")
        return None
    pm = load_pose_model(path)
    torch.manual_seed(0)
    # every joint visible: random weights must not make the lifting skip anyone
    cfg = CPMConfig.from_dict({**cfg.to_dict(), "visibility_threshold": -1e9})
    fused_cfg = cfg.with_fusion(enabled=True)
    net = LiftingCPM(fused_cfg)
    img = (np.random.default_rng(0).random((480, 360, 3)) * 255).astype(np.uint8)
    box = [[60, 40, 300, 440]]
    est_f = Estimator(net, pm, device="cpu")
    est_p = Estimator(LiftingCPM(cfg), None, device="cpu")
    est_p.model.load_state_dict(
        {k: v for k, v in net.state_dict().items() if k != "fusion_logit"})
    warm_up(est_f, lambda: est_f.estimate(img, boxes=box))
    tf = timeit(lambda: est_f.estimate(img, boxes=box), repeat)
    tp = timeit(lambda: est_p.estimate(img, boxes=box), repeat)
    runs = [est_f.estimate(img, boxes=box) for _ in range(max(3, repeat))]
    r = runs[-1]
    lift_s = float(np.median([x.timings["lift"] for x in runs]))
    fusion_s = float(np.median([x.timings["fusion"] for x in runs]))
    cnn_s = float(np.median([x.timings["cnn"] for x in runs]))
    lifted = sum(bool(s.fit is not None and s.fit.lifted[0]) for s in r.persons[0].stages)
    cold = []
    for _ in range(max(3, repeat)):
        pm.pattern_cache.clear()
        cold.append(est_f.estimate(img, boxes=box))
    cold_lf = float(np.median([x.timings["lift"] + x.timings["fusion"] for x in cold]))
    print(f"  3D model: {path.name}")
    print(f"  {cfg.name}: estimate, 1 person, CNN only          {tp * 1e3:8.1f} ms")
    print(f"  {cfg.name}: estimate, 1 person, lifting + fusion  {tf * 1e3:8.1f} ms  "
          f"(ratio {tf / tp:.3f}, overhead {100 * (tf - tp) / tp:5.1f}%; lift "
          f"{r.timings['lift'] * 1e3:.1f} ms, fusion {r.timings['fusion'] * 1e3:.1f} ms in the "
          f"last run; {lifted}/{len(r.persons[0].stages)} stages lifted)")
    print(f"  {cfg.name}: per-stage lifting {lift_s * 1e3:.2f} ms + fusion "
          f"{fusion_s * 1e3:.2f} ms = {100 * (lift_s + fusion_s) / cnn_s:.1f}% of the "
          f"network's forward ({cnn_s * 1e3:.1f} ms; medians of {len(runs)} estimates, the "
          f"visibility pattern's operators cached; goal <= 10%); with the pattern cache "
          f"cleared before each estimate (a new pattern: direct solves) "
          f"{cold_lf * 1e3:.2f} ms = {100 * cold_lf / cnn_s:.1f}%")
    return {"cnn_only": tp, "fused": tf, "ratio": tf / tp, "lift": lift_s,
            "fusion": fusion_s, "cnn": cnn_s, "cold_lift_fusion": cold_lf}


def warm_up(est: object, run: object) -> None:
    """Run an estimate until the 3D model has prepared the visibility pattern's operators
    (``build_min`` sightings, one per stage and person)."""
    pm = getattr(est, "pose_model", None)
    n = 2 if pm is None else int(getattr(pm, "build_min", 16)) // 2 + 2
    for _ in range(n):
        run()


def bench_default_estimate(repeat: int) -> dict[str, float] | None:
    """The shipped default (``Estimator.default()``: person detector, the MoveNet-trunk
    network with per-stage lifting and fusion, our 3D model) on the bundled full-body
    photo: the whole estimate, detector included, and with the person's box given."""
    from poseviewer.estimator import Estimator
    from poseviewer.paths import RESOURCES

    photo = RESOURCES / "sample_fullbody.jpg"
    if not photo.is_file():
        print(f"  ({photo} missing: skipped)")
        return None
    est = Estimator.default(device="cpu")
    from poseviewer.imageio import load_image

    img = load_image(str(photo)).rgb  # decoded once: the figure is the estimate itself
    first = est.estimate(img)
    box = [list(map(float, first.persons[0].box))] if first.persons else None
    n = max(5, 3 * repeat)
    cold = []
    for _ in range(n):  # a photo whose visibility pattern is new (direct solves)
        est.pose_model.pattern_cache.clear()
        cold.append(est.estimate(img))
    warm_up(est, lambda: est.estimate(img))
    full = [est.estimate(img) for _ in range(n)]
    given = [est.estimate(img, boxes=box) for _ in range(n)] if box else []

    def med(runs: list, key: str) -> float:
        return float(np.median([r.timings.get(key, 0.0) for r in runs]))

    out = {"total": med(full, "total"), "detect": med(full, "detect"),
           "cnn": med(full, "cnn"), "lift": med(full, "lift"), "fusion": med(full, "fusion"),
           "cold_total": med(cold, "total"), "cold_lift": med(cold, "lift"),
           "cold_fusion": med(cold, "fusion"), "cold_cnn": med(cold, "cnn")}
    if given:
        out["total_box_given"] = med(given, "total")
    print(f"  default estimate on {photo.name} ({img.shape[1]} x {img.shape[0]}), 1 person, "
          f"median of {n}: total {out['total'] * 1e3:.1f} ms (detector "
          f"{out['detect'] * 1e3:.1f}, network {out['cnn'] * 1e3:.1f}, lifting "
          f"{out['lift'] * 1e3:.1f}, fusion {out['fusion'] * 1e3:.1f}; lifting + fusion "
          f"{100 * (out['lift'] + out['fusion']) / out['cnn']:.1f}% of the network); with the "
          f"box given {out.get('total_box_given', float('nan')) * 1e3:.1f} ms (goal <= 100 ms)")
    print(f"  the same with the pattern cache cleared before each estimate: total "
          f"{out['cold_total'] * 1e3:.1f} ms, lifting {out['cold_lift'] * 1e3:.1f} + fusion "
          f"{out['cold_fusion'] * 1e3:.1f} ms = "
          f"{100 * (out['cold_lift'] + out['cold_fusion']) / out['cold_cnn']:.1f}% of the "
          f"network ({out['cold_cnn'] * 1e3:.1f} ms)")
    return out


def bf16_effect(repeat: int, weights: str | None) -> dict[str, float] | None:
    """bf16 vs fp32 on trained weights (--weights, else the bundled default) on the
    reference test image and the first LSPET photos (when ../shared has them): max |diff|
    of the fused maps over all stages, joint moves in pixels, time."""
    from poseviewer.cnn import load_cpm
    from poseviewer.estimator import DEFAULT_CNN, Estimator
    from poseviewer.lifting import load_pose_model
    from poseviewer.paths import shared_path

    path = Path(weights) if weights else DEFAULT_CNN
    if not path.is_file():
        print(f"  (no trained weights at {path}: bf16 accuracy check skipped; pass --weights)")
        return None
    print(f"  weights: {path}")
    images: list = []
    img_path = shared_path("reference", "lftd", "test_image.png")
    if img_path.is_file():
        images.append(str(img_path))
    lspet = shared_path("data", "lspet")
    if lspet.is_dir():
        images += [str(p) for p in sorted(lspet.rglob("*.jpg"))[:4]]
    if not images:
        print("  (no photo in ../shared: using a random image, the figures mean little)")
        images.append((np.random.default_rng(0).random((368, 368, 3)) * 255).astype(np.uint8))
    pm_path = find_pose_model()
    pm = load_pose_model(pm_path) if pm_path is not None else None
    est = Estimator(load_cpm(path), pm, device="cpu")
    print(f"  3D model attached: {pm_path} (fusion active: {est.model.fusion_active}); "
          f"{len(images)} image(s)")
    est.bf16 = True
    if not est.bf16:  # the Estimator runs float32 where bf16 is not native
        print(f"  {est.notes[-1]}: bf16 accuracy check skipped")
        return None
    map_diff, moves = 0.0, []
    map_max = 0.0
    t32 = t16 = 0.0
    for img in images:
        est.bf16 = False
        a = est.estimate(img)
        t32 += timeit(lambda img=img: est.estimate(img), repeat, warmup=0)
        est.bf16 = True
        b = est.estimate(img)
        t16 += timeit(lambda img=img: est.estimate(img), repeat, warmup=0)
        if len(a.persons) != len(b.persons):
            print(f"  {img if isinstance(img, str) else 'array'}: fp32 found "
                  f"{len(a.persons)} people, bf16 {len(b.persons)}")
        for pa, pb in zip(a.persons, b.persons, strict=False):
            for sa, sb in zip(pa.stages, pb.stages, strict=True):
                map_diff = max(map_diff, float(np.abs(sa.fused_maps - sb.fused_maps).max()))
                map_max = max(map_max, float(np.abs(sa.fused_maps).max()))
            moves.append(np.linalg.norm(pa.final.joints_2d - pb.final.joints_2d, axis=1))
    j = np.concatenate(moves) if moves else np.zeros(1)
    print(f"  bf16 vs fp32: maps (every stage, fused) max |diff| {map_diff:.4f} (map max "
          f"{map_max:.3f}); final joints moved {(j > 0).sum()}/{j.size}, mean {j.mean():.2f} "
          f"px, max {j.max():.1f} px; estimate time fp32 {t32 * 1e3:.1f} ms, bf16 "
          f"{t16 * 1e3:.1f} ms (all images)")
    return {"map_diff": map_diff, "joint_mean": float(j.mean()), "joint_max": float(j.max())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also try torch.compile")
    ap.add_argument("--skip-release", action="store_true", help="skip the full PoseNet")
    ap.add_argument("--weights", help="trained CNN weights for the bf16 accuracy check "
                    "(default: the bundled cpm_default.safetensors)")
    ap.add_argument("--quick", action="store_true",
                    help="one timed run per figure and a smaller matmul (less precise)")
    ap.add_argument("--estimate-only", action="store_true",
                    help="only the full-estimate figures (lifting + fusion overhead)")
    args = ap.parse_args()
    if args.quick:
        args.repeat = 1
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"mkldnn {torch.backends.mkldnn.is_available()}"
          f"{', quick' if args.quick else ''}")
    print("uptime:", uptime())
    n = 2048 if args.quick else 4096
    peak = peak_gflops(args.repeat, n)
    print(f"fp32 matmul {n}^3: {peak:.1f} GFLOP/s (the peak used below)")
    configs = [("small-cpu", small_cpu(fusion=False), 8)]
    try:
        from poseviewer.train2d.presets import cpm_default

        configs.insert(0, ("cpm-default", cpm_default(fusion=False), 8))
    except ImportError:
        pass
    try:  # the shipped network's own config (mirror pass as shipped), random weights
        from poseviewer.cnn import read_cpm_metadata
        from poseviewer.paths import DEFAULT_CNN

        shipped = read_cpm_metadata(DEFAULT_CNN)["config"]
        configs.insert(0, (f"shipped{' (mirror pass)' if shipped.flip_test else ''}",
                           shipped.with_fusion(enabled=False), 8))
    except (ImportError, OSError, ValueError) as exc:
        print(f"  (shipped config not read: {exc})")
    if args.estimate_only:
        print("the shipped default, detector included:")
        bench_default_estimate(args.repeat)
        print("full estimate with per-stage lifting and fusion:")
        ov = {name: bench_estimate(cfg, args.repeat) for name, cfg, _ in configs}
        print("uptime:", uptime())
        summary({}, 0.0, ov, None)
        return 0
    posenet: dict[str, float] = {}
    if not args.skip_release:
        cfg = release_posenet()
        print(f"release PoseNet: {gmac(cfg):.1f} GMAC per {cfg.input_size} crop")
        posenet = bench_network("release-posenet", cfg, args.repeat, 1, args.compile, peak)
    for name, cfg, batch in configs:
        print(f"{name}: {gmac(cfg):.3f} GMAC per {cfg.input_size} crop, batch {batch}")
        bench_network(name, cfg, args.repeat, batch, args.compile, peak)
    print("full estimate with per-stage lifting and fusion:")
    overheads: dict[str, dict[str, float] | None] = {}
    for name, cfg, _ in configs:
        overheads[name] = bench_estimate(cfg, args.repeat)
    if not args.skip_release:
        overheads["release-posenet"] = bench_estimate(release_posenet(),
                                                      max(1, args.repeat - 1))
    print("the shipped default, detector included:")
    bench_default_estimate(args.repeat)
    print("bf16 effect:")
    bf16 = bf16_effect(args.repeat, args.weights)
    print("uptime:", uptime())
    summary(posenet, peak, overheads, bf16)
    return 0


def summary(posenet: dict[str, float], peak: float,
            overheads: dict[str, dict[str, float] | None],
            bf16: dict[str, float] | None) -> None:
    """The figures the CNN issue asks for, with its goals."""
    print("summary:")
    if posenet:
        macs = gmac(release_posenet())
        ours = posenet["fp32 channels_last"]  # what the Estimator runs
        fp32 = {k: v for k, v in posenet.items() if not k.startswith("bf16")}
        best_fp32 = min(fp32, key=fp32.get)
        best = min(posenet, key=posenet.get)
        print(f"  PoseNet per 368 crop: fp32 (Estimator: channels_last) {ours * 1e3:.1f} ms = "
              f"{2 * macs / ours:.1f} GFLOP/s ({100 * 2 * macs / ours / peak:.1f}% of the "
              f"{peak:.1f} GFLOP/s matmul peak); bf16 "
              f"{posenet['bf16 autocast channels_last'] * 1e3:.1f} ms")
        print(f"  best torch setting: {best} {posenet[best] * 1e3:.1f} ms; best fp32: "
              f"{best_fp32} {posenet[best_fp32] * 1e3:.1f} ms; Estimator fp32 / best fp32 = "
              f"{ours / posenet[best_fp32]:.2f}, / best overall = {ours / posenet[best]:.2f} "
              f"(goal <= 1.2)")
    for name, o in overheads.items():
        if o is not None:
            print(f"  {name}: estimate with lifting + fusion / CNN alone = {o['ratio']:.3f} "
                  f"({o['fused'] * 1e3:.1f} vs {o['cnn_only'] * 1e3:.1f} ms; goal <= 1.15); "
                  f"per-stage lifting + fusion = "
                  f"{100 * (o['lift'] + o['fusion']) / o['cnn']:.1f}% of the forward "
                  f"(goal <= 10%)")
    if bf16 is not None:
        print(f"  bf16 on trained weights: maps max |diff| {bf16['map_diff']:.4f}, joints "
              f"mean {bf16['joint_mean']:.2f} px, max {bf16['joint_max']:.1f} px")


if __name__ == "__main__":
    raise SystemExit(main())

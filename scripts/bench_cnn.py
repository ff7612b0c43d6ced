#!/usr/bin/env python
"""Benchmark the CNNs on this machine (prints figures; not a test).

    .venv/bin/python scripts/bench_cnn.py [--threads 2] [--repeat 3] [--compile]

* the machine's fp32 peak, estimated from a big matmul;
* the release PoseNet per 368 x 368 crop: fp32 (contiguous, channels_last, traced + frozen),
  bf16 autocast, optionally torch.compile; GMAC and GFLOP/s reached;
* the full ``Estimator.estimate`` for one person with per-stage lifting and fusion on (needs
  ``poseviewer.lifting`` and the 3D model: the bundled one or ../shared's released .mat),
  and the overhead of lifting + fusion over the CNN alone;
* the small CPU presets; bf16 vs fp32 differences of maps and joints.

The machine is shared: the script prints ``uptime`` before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from poseviewer.cnn import LiftingCPM, release_posenet, small_cpu  # noqa: E402
from poseviewer.cnn.config import CPMConfig  # noqa: E402


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "(uptime unavailable)"


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


def peak_gflops(repeat: int) -> float:
    n = 4096
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    t = timeit(lambda: a @ b, repeat)
    return 2 * n**3 / t / 1e9


def bench_network(name: str, cfg: CPMConfig, repeat: int, batch: int, use_compile: bool,
                  peak: float) -> dict[str, float]:
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


def bench_estimate(cfg: CPMConfig, repeat: int) -> None:
    """Full estimate for one person, fusion on vs the CNN alone."""
    try:
        import poseviewer.lifting  # noqa: F401
    except ImportError:
        print("  (poseviewer.lifting not available: skipping the lifting/fusion figures)")
        return
    from poseviewer.estimator import Estimator, load_pose_model

    path = find_pose_model()
    if path is None:
        print("  (no 3D model found: skipping the lifting/fusion figures)")
        return
    pm = load_pose_model(path)
    torch.manual_seed(0)
    fused_cfg = cfg.with_fusion(enabled=True)
    net = LiftingCPM(fused_cfg)
    img = (np.random.default_rng(0).random((480, 360, 3)) * 255).astype(np.uint8)
    box = [[60, 40, 300, 440]]
    est_f = Estimator(net, pm, device="cpu")
    est_p = Estimator(LiftingCPM(cfg), None, device="cpu")
    est_p.model.load_state_dict(
        {k: v for k, v in net.state_dict().items() if k != "fusion_logit"})
    tf = timeit(lambda: est_f.estimate(img, boxes=box), repeat)
    tp = timeit(lambda: est_p.estimate(img, boxes=box), repeat)
    r = est_f.estimate(img, boxes=box)
    print(f"  3D model: {path.name}")
    print(f"  {cfg.name}: estimate, 1 person, CNN only          {tp * 1e3:8.1f} ms")
    print(f"  {cfg.name}: estimate, 1 person, lifting + fusion  {tf * 1e3:8.1f} ms  "
          f"(overhead {100 * (tf - tp) / tp:5.1f}%; lift {r.timings['lift'] * 1e3:.1f} ms, "
          f"fusion {r.timings['fusion'] * 1e3:.1f} ms in the last run)")


def bf16_effect(repeat: int, weights: str | None) -> None:
    """bf16 vs fp32 on trained weights (--weights, else the bundled default) on the
    reference test image."""
    from poseviewer.cnn import load_cpm
    from poseviewer.estimator import DEFAULT_CNN, Estimator
    from poseviewer.paths import shared_path

    path = Path(weights) if weights else DEFAULT_CNN
    if not path.is_file():
        print(f"  (no trained weights at {path}: bf16 accuracy check skipped)")
        return
    print(f"  weights: {path}")

    img_path = shared_path("reference", "lftd", "test_image.png")
    img = str(img_path) if img_path.is_file() else (
        np.random.default_rng(0).random((368, 368, 3)) * 255).astype(np.uint8)
    est = Estimator(load_cpm(path), None, device="cpu")
    a = est.estimate(img)
    t32 = timeit(lambda: est.estimate(img), repeat)
    est.bf16 = True
    b = est.estimate(img)
    t16 = timeit(lambda: est.estimate(img), repeat)
    for pa, pb in zip(a.persons, b.persons, strict=True):
        d = np.abs(pa.final.cnn_maps - pb.final.cnn_maps).max()
        j = np.linalg.norm(pa.final.joints_2d - pb.final.joints_2d, axis=1)
        print(f"  default CNN: bf16 vs fp32 final maps max |diff| {d:.4f} "
              f"(map max {pa.final.cnn_maps.max():.3f}); joints moved: {(j > 0).sum()}/14, "
              f"max {j.max():.1f} px; time fp32 {t32 * 1e3:.1f} ms, bf16 {t16 * 1e3:.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also try torch.compile")
    ap.add_argument("--skip-release", action="store_true", help="skip the full PoseNet")
    ap.add_argument("--weights", help="trained CNN weights for the bf16 accuracy check "
                    "(default: the bundled cpm_default.safetensors)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"mkldnn {torch.backends.mkldnn.is_available()}")
    print("uptime:", uptime())
    peak = peak_gflops(args.repeat)
    print(f"fp32 matmul 4096^3: {peak:.1f} GFLOP/s (the peak used below)")
    configs = [("small-cpu", small_cpu(fusion=False), 8)]
    try:
        from poseviewer.train2d.presets import cpm_default

        configs.insert(0, ("cpm-default", cpm_default(fusion=False), 8))
    except ImportError:
        pass
    if not args.skip_release:
        cfg = release_posenet()
        print(f"release PoseNet: {gmac(cfg):.1f} GMAC per {cfg.input_size} crop")
        bench_network("release-posenet", cfg, args.repeat, 1, args.compile, peak)
    for name, cfg, batch in configs:
        print(f"{name}: {gmac(cfg):.3f} GMAC per {cfg.input_size} crop, batch {batch}")
        bench_network(name, cfg, args.repeat, batch, args.compile, peak)
    print("full estimate with per-stage lifting and fusion:")
    for _name, cfg, _ in configs:
        bench_estimate(cfg, args.repeat)
    if not args.skip_release:
        bench_estimate(release_posenet(), max(1, args.repeat - 1))
    print("bf16 effect:")
    bf16_effect(args.repeat, args.weights)
    print("uptime:", uptime())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Convert the release's TensorFlow checkpoint to poseviewer safetensors (one per network).

Every tensor's name and shape is checked against the architecture (``CPMConfig
.tf_variables``), weights are permuted HWIO -> OIHW, and each network is written with its
config in the safetensors metadata, loadable with ``poseviewer.cnn.load_cpm``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from poseviewer.checkpoint.bundle import CheckpointError, CheckpointReader
from poseviewer.cnn.config import CPMConfig, release_personnet, release_posenet

#: output file stem -> (checkpoint scope, config)
RELEASE_NETWORKS: dict[str, tuple[str, CPMConfig]] = {
    "release_posenet": ("CPM/PoseNet", release_posenet()),
    "release_personnet": ("CPM/PersonNet", release_personnet()),
}


def check_names_and_shapes(reader: CheckpointReader,
                           networks: dict[str, tuple[str, CPMConfig]]) -> list[str]:
    """Raise CheckpointError listing missing/unexpected/mis-shaped tensors; returns the
    names that belong to no network (ignored, e.g. ``global_step``)."""
    expected: dict[str, tuple[int, ...]] = {}
    for scope, cfg in networks.values():
        expected.update(cfg.tf_variables(scope))
    scopes = tuple(scope + "/" for scope, _ in networks.values())
    have = reader.entries
    problems = []
    missing = [n for n in expected if n not in have]
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    unexpected = [n for n in have if n.startswith(scopes) and n not in expected]
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    for n, shape in expected.items():
        if n in have and have[n].shape != shape:
            problems.append(f"{n} has shape {list(have[n].shape)}, the architecture needs "
                            f"{list(shape)}")
        elif n in have and have[n].dtype != 1:
            problems.append(f"{n} is not float32 (TF dtype enum {have[n].dtype})")
    if problems:
        raise CheckpointError("the checkpoint does not match the release architecture: "
                              + "; ".join(problems[:6]))
    return sorted(n for n in have if n not in expected)


def to_state_dict(reader: CheckpointReader, scope: str, cfg: CPMConfig,
                  verify: bool = True) -> dict[str, np.ndarray]:
    """One network's tensors as a torch state dict in numpy (OIHW weights)."""
    state = {}
    for name, _, _, _, _ in cfg.conv_layers():
        w = reader.read(f"{scope}/{name}/weights", verify)
        b = reader.read(f"{scope}/{name}/biases", verify)
        state[f"layers.{name}.weight"] = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
        state[f"layers.{name}.bias"] = np.ascontiguousarray(b)
    return state


def convert_checkpoint(prefix: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                       networks: dict[str, tuple[str, CPMConfig]] | None = None,
                       verify: bool = True) -> dict[str, Path]:
    """Convert ``prefix`` (.index + .data) to ``out_dir/<stem>.safetensors`` per network.

    Checks all names and shapes first, verifies every tensor's CRC-32C (``verify``), writes
    atomically. Returns stem -> written path.
    """
    import torch

    from poseviewer.cnn.lifting_cpm import LiftingCPM
    from poseviewer.cnn.weights import save_cpm

    networks = RELEASE_NETWORKS if networks is None else networks
    reader = CheckpointReader(prefix)
    ignored = check_names_and_shapes(reader, networks)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"output {out_dir} exists and is not a folder")
    states = {stem: to_state_dict(reader, scope, cfg, verify)
              for stem, (scope, cfg) in networks.items()}
    written = {}
    for stem, (scope, cfg) in networks.items():
        model = LiftingCPM(cfg)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in states[stem].items()})
        written[stem] = save_cpm(model, out_dir / f"{stem}.safetensors", metadata={
            "source": f"TensorFlow checkpoint {Path(str(reader.prefix)).name}, scope {scope}",
            "ignored_tensors": ignored,
        })
    return written

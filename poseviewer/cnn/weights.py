"""Save and load CPM weights as safetensors with the JSON config in the metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from poseviewer.atomic import atomic_write_bytes
from poseviewer.cnn.config import CPMConfig
from poseviewer.cnn.lifting_cpm import LiftingCPM
from poseviewer.errors import ModelError

FORMAT = "poseviewer-cpm-1"


class WeightsError(ModelError):
    """A weights file is missing, unreadable or does not match its config."""


def save_cpm(model: LiftingCPM, path: str | os.PathLike[str],
             metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s parameters + config atomically (temp file in the folder, replace).

    ``metadata`` values are stored as JSON strings next to 'config' and 'format'.
    """
    from safetensors.torch import save

    path = Path(path)
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    meta["config"] = model.config.to_json()
    meta["format"] = FORMAT
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def read_cpm_metadata(path: str | os.PathLike[str], what: str = "CNN weights"
                      ) -> dict[str, Any]:
    """The metadata of a CPM weights file (config as a CPMConfig, other values decoded);
    ``what`` names the file in messages (e.g. 'person weights (PersonNet)')."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises several types for corrupt headers
        raise WeightsError(f"cannot read {what} {path}: {exc}") from exc
    if "config" not in meta:
        raise WeightsError(f"{what} {path} has no 'config' in its safetensors metadata; "
                           "not a poseviewer CPM weights file")
    try:
        out: dict[str, Any] = {"config": CPMConfig.from_json(meta.pop("config"))}
    except (ValueError, TypeError) as exc:
        raise WeightsError(f"{path}: bad model config in metadata: {exc}") from exc
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def state_mismatch(expected: dict[str, Any], state: dict[str, Any]) -> str | None:
    """Why ``state`` cannot load into a module whose state dict is ``expected`` (missing or
    unexpected names, a wrong shape), or None when it fits."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        return f"missing {missing[:5]}, unexpected {extra[:5]}"
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            return f"tensor {k} has shape {tuple(v.shape)}, needs {tuple(expected[k].shape)}"
    return None


def load_cpm(path: str | os.PathLike[str], device: str | torch.device = "cpu",
             config: CPMConfig | None = None, what: str = "CNN weights") -> LiftingCPM:
    """Build the network from the file's config (or ``config``) and load its weights;
    ``what`` names the file in messages."""
    from safetensors.torch import load_file

    meta = read_cpm_metadata(path, what)
    cfg = config or meta["config"]
    model = LiftingCPM(cfg)
    try:
        state = load_file(str(path), device=str(device))
    except Exception as exc:
        raise WeightsError(f"cannot read {what} {path}: {exc}") from exc
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise WeightsError(f"{path} ({what}) does not match its config '{cfg.name}': "
                           f"{problem}")
    model.load_state_dict(state)
    return model.to(device)

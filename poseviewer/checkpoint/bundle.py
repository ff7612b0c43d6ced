"""Read TensorFlow's V2 checkpoint bundle (``PREFIX.index`` + ``PREFIX.data-*``) without
TensorFlow.

The ``.index`` file is a LevelDB-style sorted table: data blocks of prefix-compressed
entries with restart points, each followed by a 5-byte trailer (compression type + masked
CRC-32C of block and type), a metaindex block, an index block (one BlockHandle per data
block) and a 48-byte footer (two BlockHandles padded to 40 bytes + the 8-byte magic). Its
entries map tensor names to ``BundleEntryProto`` messages (dtype, shape, shard_id, offset,
size, masked crc32c of the tensor bytes); the entry with the empty key is the
``BundleHeaderProto`` (num_shards, endianness). Protobufs are decoded by hand here.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poseviewer.checkpoint.crc32c import crc32c, unmask

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER = 5

#: TensorFlow DataType enum -> numpy dtype (numeric types only).
TF_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"),
    5: np.dtype("<i2"), 6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"),
    17: np.dtype("<u2"), 19: np.dtype("<f2"), 22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
TF_DTYPE_NAMES = {7: "string", 14: "bfloat16", 8: "complex64", 18: "complex128",
                  20: "resource", 21: "variant"}


class CheckpointError(Exception):
    """The checkpoint bundle is missing, truncated, corrupt or unsupported."""


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's ``BundleEntryProto``."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None
    """The stored masked CRC-32C, or None if absent."""
    sliced: bool = False

    @property
    def np_dtype(self) -> np.dtype:
        """The numpy dtype (CheckpointError for unsupported TF types)."""
        if self.dtype not in TF_DTYPES:
            kind = TF_DTYPE_NAMES.get(self.dtype, f"enum {self.dtype}")
            raise CheckpointError(f"tensor {self.name!r}: unsupported dtype {kind}")
        return TF_DTYPES[self.dtype]


# ---- protobuf wire format ------------------------------------------------------------------
def read_varint(buf: bytes | memoryview, pos: int, where: str = "data") -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, new position)."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError(f"truncated varint in {where}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointError(f"varint too long in {where}")


def parse_proto(buf: bytes, where: str) -> dict[int, list[int | bytes]]:
    """Field number -> list of values (ints for varint/fixed, bytes for length-delimited)."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = read_varint(buf, pos, where)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = read_varint(buf, pos, where)
        elif wire == 1:
            if pos + 8 > n:
                raise CheckpointError(f"truncated fixed64 in {where}")
            val = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            ln, pos = read_varint(buf, pos, where)
            if pos + ln > n:
                raise CheckpointError(f"truncated length-delimited field in {where}")
            val = bytes(buf[pos:pos + ln])
            pos += ln
        elif wire == 5:
            if pos + 4 > n:
                raise CheckpointError(f"truncated fixed32 in {where}")
            val = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire} in {where}")
        fields.setdefault(num, []).append(val)
    return fields


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_entry(name: str, value: bytes) -> TensorEntry:
    """Decode a ``BundleEntryProto``."""
    f = parse_proto(value, f"the index entry of {name!r}")
    shape: list[int] = []
    for shp in f.get(2, []):
        sf = parse_proto(shp, f"the shape of {name!r}")  # TensorShapeProto
        for dim in sf.get(2, []):
            df = parse_proto(dim, f"a dimension of {name!r}")
            shape.append(_signed64(int(df.get(1, [0])[-1])))
        if sf.get(3, [0])[-1]:
            raise CheckpointError(f"tensor {name!r} has unknown rank")
    return TensorEntry(
        name=name,
        dtype=int(f.get(1, [0])[-1]),
        shape=tuple(shape),
        shard_id=int(f.get(3, [0])[-1]),
        offset=int(f.get(4, [0])[-1]),
        size=int(f.get(5, [0])[-1]),
        crc32c=int(f[6][-1]) if 6 in f else None,
        sliced=bool(f.get(7)),
    )


# ---- LevelDB table ----------------------------------------------------------------------------
def _read_block(data: bytes, offset: int, size: int, what: str) -> bytes:
    end = offset + size
    if offset < 0 or end + BLOCK_TRAILER > len(data):
        raise CheckpointError(f"index file truncated: {what} at {offset}+{size} runs past the "
                              f"end ({len(data)} bytes)")
    block = data[offset:end]
    ctype = data[end]
    stored = struct.unpack_from("<I", data, end + 1)[0]
    if unmask(stored) != crc32c(data[offset:end + 1]):
        raise CheckpointError(f"index file corrupt: checksum mismatch in {what}")
    if ctype == 1:
        raise CheckpointError(f"{what} is snappy-compressed; not supported (TensorFlow writes "
                              "bundle indexes uncompressed)")
    if ctype != 0:
        raise CheckpointError(f"{what} has unknown compression type {ctype}")
    return block


def _block_entries(block: bytes, what: str) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise CheckpointError(f"{what} is too short")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise CheckpointError(f"{what} has a bad restart count {num_restarts}")
    out = []
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = read_varint(block, pos, what)
        non_shared, pos = read_varint(block, pos, what)
        vlen, pos = read_varint(block, pos, what)
        if shared > len(key) or pos + non_shared + vlen > limit:
            raise CheckpointError(f"{what} has a malformed entry at byte {pos}")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        out.append((key, block[pos:pos + vlen]))
        pos += vlen
    return out


def _handle(buf: bytes, pos: int, what: str) -> tuple[int, int, int]:
    off, pos = read_varint(buf, pos, what)
    size, pos = read_varint(buf, pos, what)
    return off, size, pos


def read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of a LevelDB-format table, in order."""
    if len(data) < FOOTER_SIZE:
        raise CheckpointError(f"index file truncated: {len(data)} bytes, shorter than the "
                              f"{FOOTER_SIZE}-byte footer")
    footer = data[-FOOTER_SIZE:]
    magic = struct.unpack_from("<Q", footer, 40)[0]
    if magic != TABLE_MAGIC:
        raise CheckpointError("not a TensorFlow checkpoint index (bad table magic number; "
                              "truncated or another file type)")
    _, _, pos = _handle(footer, 0, "footer")  # metaindex (unused: no filters in bundles)
    idx_off, idx_size, _ = _handle(footer, pos, "footer")
    index = _block_entries(_read_block(data, idx_off, idx_size, "index block"), "index block")
    entries: list[tuple[bytes, bytes]] = []
    for i, (_, handle) in enumerate(index):
        off, size, _ = _handle(handle, 0, "index block")
        what = f"data block {i}"
        entries.extend(_block_entries(_read_block(data, off, size, what), what))
    return entries


# ---- bundle ----------------------------------------------------------------------------------
def _strip_prefix(prefix: str | os.PathLike[str]) -> Path:
    p = str(prefix)
    for suffix in (".index", ".data-00000-of-00001"):
        if p.endswith(suffix):
            p = p[: -len(suffix)]
    return Path(p)


class CheckpointReader:
    """Index of a V2 bundle; tensors are read (and checksummed) on demand."""

    def __init__(self, prefix: str | os.PathLike[str]) -> None:
        self.prefix = _strip_prefix(prefix)
        index_path = Path(str(self.prefix) + ".index")
        if not index_path.is_file():
            raise CheckpointError(f"checkpoint index not found: {index_path} (give the "
                                  "checkpoint prefix, e.g. .../model.ckpt)")
        raw = index_path.read_bytes()
        self.num_shards = 1
        self.entries: dict[str, TensorEntry] = {}
        for key, value in read_table(raw):
            if key == b"":
                hdr = parse_proto(value, "the bundle header")
                self.num_shards = int(hdr.get(1, [1])[-1])
                if int(hdr.get(2, [0])[-1]) != 0:
                    raise CheckpointError("big-endian checkpoints are not supported")
                continue
            name = key.decode("utf-8", errors="replace")
            self.entries[name] = parse_entry(name, value)
        self._shards: dict[int, np.memmap | bytes] = {}

    def shard_path(self, shard: int) -> Path:
        """The data file of one shard."""
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def _shard(self, shard: int):
        if shard not in self._shards:
            path = self.shard_path(shard)
            if not path.is_file():
                raise CheckpointError(f"checkpoint data file not found: {path}")
            self._shards[shard] = (np.memmap(path, dtype=np.uint8, mode="r")
                                   if path.stat().st_size else np.zeros(0, np.uint8))
        return self._shards[shard]

    def names(self) -> list[str]:
        """Tensor names, sorted."""
        return sorted(self.entries)

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        """One tensor as a numpy array in its stored (TF) layout."""
        if name not in self.entries:
            raise CheckpointError(f"tensor {name!r} is not in the checkpoint")
        e = self.entries[name]
        if e.sliced:
            raise CheckpointError(f"tensor {name!r} is stored in slices; not supported")
        dtype = e.np_dtype
        if not 0 <= e.shard_id < self.num_shards:
            raise CheckpointError(f"tensor {name!r} names shard {e.shard_id} of "
                                  f"{self.num_shards}")
        count = int(np.prod(e.shape, dtype=np.int64)) if e.shape else 1
        if count * dtype.itemsize != e.size:
            raise CheckpointError(f"tensor {name!r}: size {e.size} bytes does not match shape "
                                  f"{e.shape} of {dtype}")
        data = self._shard(e.shard_id)
        if e.offset + e.size > len(data):
            raise CheckpointError(
                f"checkpoint data file {self.shard_path(e.shard_id)} is truncated: tensor "
                f"{name!r} needs bytes {e.offset}..{e.offset + e.size}, the file has {len(data)}")
        raw = np.array(data[e.offset:e.offset + e.size])  # a writable, aligned copy
        if verify and e.crc32c is not None and crc32c(raw) != unmask(e.crc32c):
            raise CheckpointError(f"checksum mismatch for tensor {name!r}: the data file is "
                                  "corrupt")
        return raw.view(dtype).reshape(e.shape).astype(dtype.newbyteorder("="), copy=False)

    def read_all(self, verify: bool = True) -> dict[str, np.ndarray]:
        """Every tensor, by name."""
        return {n: self.read(n, verify) for n in self.names()}

"""The saved-model file: a versioned header and 64-byte aligned weights, memory-mapped on load.

Layout:  magic (8 bytes) | format version (u32) | header length (u64) | header JSON | padding |
         constant data, each array at a 64-byte aligned file offset.
The header holds each stage's IR text, the plan facts, every constant's dtype/shape/offset, and CRC32s
of the header and of the data, so a truncated, corrupt, foreign or newer file is refused before use.
Nothing here imports torch.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import zlib

import numpy as np

from .dialects.ir import DTYPES, Module, dtype_name
from .dialects.text import parse_module, print_module
from .errors import ModelFileError, RtError

MAGIC = b"RTMODEL\x00"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIQ")          # magic, version, header length
ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def save_model(path: str, stages: dict[str, Module]) -> None:
    planned = stages["planned"]
    names = [op.attrs["name"] for op in planned.ops if op.name == "const"]
    entries, arrays, placed, offset = [], [], {}, 0
    for name in dict.fromkeys(names):
        arr = np.ascontiguousarray(planned.constants[name])
        # tied weights (e.g. GPT-2's embedding and LM head) are one array under two names: store it once
        key = (arr.__array_interface__["data"][0], arr.shape, arr.dtype.str)
        if key not in placed:
            placed[key] = offset
            arrays.append(arr)
            offset = _align(offset + arr.nbytes)
        entries.append({"name": name, "dtype": dtype_name(arr.dtype), "shape": list(arr.shape),
                        "offset": placed[key], "nbytes": int(arr.nbytes)})
    data_crc = 0
    for arr in arrays:
        data_crc = zlib.crc32(memoryview(arr).cast("B"), data_crc)
    header = {
        "format_version": FORMAT_VERSION,
        "ir": {stage: print_module(m) for stage, m in stages.items()},
        "plan": planned.meta["plan"],
        "constants": entries,
        "data_crc32": data_crc,
    }
    blob = json.dumps(header).encode()
    data_start = _align(_PREFIX.size + len(blob) + 4)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(blob)))
        f.write(blob)
        f.write(struct.pack("<I", zlib.crc32(blob)))
        for arr, start in zip(arrays, sorted(set(placed.values()))):
            f.write(b"\0" * (data_start + start - f.tell()))
            f.write(memoryview(arr).cast("B"))
    os.replace(tmp, path)


def _refuse(path: str, why: str) -> ModelFileError:
    return ModelFileError(f"{path}: {why}")


class MappedWeights:
    """The file's weights, memory-mapped. `drop(arr)` gives a constant's pages back to the OS (they
    come back from the file if read again): for weights the runtime has copied into its own layout."""

    def __init__(self, mapped: mmap.mmap | None):
        self.mapped = mapped
        self.base = np.frombuffer(mapped, np.uint8).ctypes.data if mapped is not None else 0

    def drop(self, arr: np.ndarray) -> None:
        if self.mapped is None or not self.base <= arr.ctypes.data < self.base + len(self.mapped):
            return
        start = arr.ctypes.data - self.base
        lo = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        hi = (start + arr.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if hi > lo:
            self.mapped.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def drop_all(self) -> None:
        if self.mapped is not None:
            self.mapped.madvise(mmap.MADV_DONTNEED)


def load_model(path: str) -> tuple[dict[str, Module], dict, MappedWeights]:
    """Read a saved model: (stages, plan facts, the mapped weights). The planned stage's constants are
    views of the mapped file; MappedWeights gives their pages back once the runtime holds its own copies."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise _refuse(path, f"cannot open: {e.strerror}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < _PREFIX.size:
            raise _refuse(path, "not an rt model file (too short)")
        magic, version, hlen = _PREFIX.unpack(f.read(_PREFIX.size))
        if magic != MAGIC:
            raise _refuse(path, "not an rt model file (bad magic bytes)")
        if version > FORMAT_VERSION:
            raise _refuse(path, f"written by a newer rt (format {version}; this rt reads up to "
                                f"{FORMAT_VERSION}): upgrade rt")
        if _PREFIX.size + hlen + 4 > size:
            raise _refuse(path, "truncated (header cut short)")
        blob = f.read(hlen)
        (crc,) = struct.unpack("<I", f.read(4))
        if zlib.crc32(blob) != crc:
            raise _refuse(path, "corrupt header (checksum mismatch)")
        try:
            header = json.loads(blob)
        except ValueError:
            raise _refuse(path, "corrupt header (not JSON)") from None
        data_start = _align(_PREFIX.size + hlen + 4)
        entries = header["constants"]
        end = max((data_start + e["offset"] + e["nbytes"] for e in entries), default=data_start)
        if end > size:
            raise _refuse(path, f"truncated (weights end at byte {end}, the file has {size})")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    constants = {}
    data_crc = 0
    checked = set()
    for e in entries:
        if e["dtype"] not in DTYPES:
            raise _refuse(path, f"constant {e['name']!r} has unknown dtype {e['dtype']!r}")
        arr = np.frombuffer(mapped, dtype=DTYPES[e["dtype"]], count=int(np.prod(e["shape"], dtype=np.int64)),
                            offset=data_start + e["offset"]).reshape(e["shape"])
        if e["offset"] not in checked:
            checked.add(e["offset"])
            data_crc = zlib.crc32(memoryview(arr).cast("B"), data_crc)
        constants[e["name"]] = arr
    if data_crc != header["data_crc32"]:
        raise _refuse(path, "corrupt weights (checksum mismatch)")
    weights = MappedWeights(mapped)
    weights.drop_all()   # read only for the checksum: what runs will fault back in what it reads
    try:
        stages = {stage: parse_module(text, constants if stage == "planned" else None)
                  for stage, text in header["ir"].items()}
    except RtError as e:
        raise _refuse(path, f"corrupt IR: {e}") from None
    stages["planned"].meta["plan"] = header["plan"]
    return stages, header["plan"], weights

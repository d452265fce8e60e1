"""Mutations of a saved model file, one family per part of the format: the prefix, the header JSON, the
constants table, each IR stage's text, its numeric literals and storages, the weights, truncations and
raw bit flips. Structured mutants get valid checksums (what a careless tool or a hostile user would
write), so they meet the loader's own checks rather than the CRC."""
from __future__ import annotations

import json
import random
import re
import struct
import zlib
from typing import Callable, Iterator

_PREFIX = struct.Struct("<8sIQ")          # serialize.py's layout: magic, version, header length
_NUMBER = re.compile(r"(?<![\w.%])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_STORAGE = re.compile(r"@ (arena\[\d+, \d+\]|view\([^)]*\)|input\[\d+\]|output\[\d+\]|const)")


def _align(n: int) -> int:
    return (n + 63) // 64 * 64


class File:
    """A saved model taken apart: prefix, header, weights (from the data start)."""

    def __init__(self, data: bytes):
        self.data = data
        self.magic, self.version, hlen = _PREFIX.unpack(data[:_PREFIX.size])
        self.header = json.loads(data[_PREFIX.size:_PREFIX.size + hlen])
        self.weights = data[_align(_PREFIX.size + hlen + 4):]

    def pack(self, header: dict, weights: bytes | None = None, version: int | None = None) -> bytes:
        blob = json.dumps(header).encode()
        head = _PREFIX.pack(self.magic, self.version if version is None else version, len(blob))
        head += blob + struct.pack("<I", zlib.crc32(blob))
        return head + b"\0" * (_align(len(head)) - len(head)) + (self.weights if weights is None else weights)

    def header_copy(self) -> dict:
        return json.loads(json.dumps(self.header))


def _odd_number(rng: random.Random, n: float) -> str:
    choices = [0, 1, -1, n + 1, n - 1, n * 2, n // 2 if isinstance(n, int) else n / 2, 2 ** 31, 2 ** 62,
               -2 ** 40, 64, 3]
    if isinstance(n, float):
        choices += ["inf", "nan", 1e308, -0.0]
    return str(rng.choice(choices))


def _odd_value(rng: random.Random, old):
    return rng.choice([None, "x", -1, 1.5, [], {}, True, 0, 3, 10 ** 12, 2 ** 63, [old], {"": old}, "[" * 50])


def _json_paths(obj, at=()):
    yield at
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        if not (at == () and k == "ir"):          # IR text has its own mutators
            yield from _json_paths(v, at + (k,))


def _set(header: dict, at: tuple, value, delete: bool = False) -> dict:
    parent = header
    for k in at[:-1]:
        parent = parent[k]
    if delete and isinstance(parent, dict):
        del parent[at[-1]]
    else:
        parent[at[-1]] = value
    return header


def prefix(f: File, rng: random.Random) -> bytes:
    b = bytearray(f.data)
    for _ in range(rng.randint(1, 3)):
        b[rng.randrange(_PREFIX.size)] = rng.randrange(256)
    return bytes(b)


def header_field(f: File, rng: random.Random) -> bytes:
    h = f.header_copy()
    at = rng.choice([p for p in _json_paths(h) if p])
    parent = h
    for k in at[:-1]:
        parent = parent[k]
    return f.pack(_set(h, at, _odd_value(rng, parent[at[-1]]), delete=rng.random() < 0.2))


def constants_table(f: File, rng: random.Random) -> bytes:
    h = f.header_copy()
    if not h["constants"]:
        return header_field(f, rng)
    e = rng.choice(h["constants"])
    other = rng.choice(h["constants"])
    key = rng.choice(["offset", "shape", "dtype", "nbytes", "name", "dup", "drop"])
    if key == "offset":
        e["offset"] = rng.choice([other["offset"], e["offset"] + 64, max(0, e["offset"] - 64), 0,
                                  len(f.weights), 2 ** 40])
    elif key == "shape":
        s = e["shape"]
        e["shape"] = rng.choice([s[::-1], s + [1], s[:-1], [max(1, int(x) * 2) for x in s], other["shape"], []])
        if rng.random() < 0.5:         # a consistent size, so the shape itself meets the checks
            n = 1
            for x in e["shape"]:
                n *= int(x)
            e["nbytes"] = n * 4
    elif key == "dtype":
        e["dtype"] = rng.choice(["i32", "f32", "i64", "f16", "bool", "f64", "u8"])
    elif key == "nbytes":
        e["nbytes"] = rng.choice([0, e["nbytes"] + 4, e["nbytes"] * 2, -4])
    elif key == "name":
        e["name"] = other["name"]
    elif key == "dup":
        h["constants"].append(dict(e))
    else:
        h["constants"].remove(e)
    return f.pack(h)


def _stage(f: File, rng: random.Random) -> str:
    stages = list(f.header["ir"])
    return "planned" if rng.random() < 0.7 or len(stages) == 1 else rng.choice(stages)


def _with_text(f: File, stage: str, text: str) -> bytes:
    h = f.header_copy()
    h["ir"][stage] = text
    return f.pack(h)


def ir_text(f: File, rng: random.Random) -> bytes:
    stage = _stage(f, rng)
    t = f.header["ir"][stage]
    i = rng.randrange(len(t))
    j = min(len(t), i + rng.randint(1, 12))
    edit = rng.choice([t[:i] + t[j:], t[:i] + t[i:j][::-1] + t[j:], t[:i] + rng.choice("0123456789%@[],x:{}\"-") + t[i:],
                       t[:i] + t[i:j] + t[i:j] + t[j:]])
    return _with_text(f, stage, edit)


def ir_line(f: File, rng: random.Random) -> bytes:
    """Ops moved, dropped or duplicated."""
    stage = _stage(f, rng)
    lines = f.header["ir"][stage].split("\n")
    body = [k for k, ln in enumerate(lines) if " = " in ln]
    a, b = rng.choice(body), rng.choice(body)
    how = rng.choice(["swap", "drop", "dup"])
    if how == "swap":
        lines[a], lines[b] = lines[b], lines[a]
    elif how == "drop":
        del lines[a]
    else:
        lines.insert(b, lines[a])
    return _with_text(f, stage, "\n".join(lines))


def ir_number(f: File, rng: random.Random) -> bytes:
    stage = _stage(f, rng)
    t = f.header["ir"][stage]
    hits = list(_NUMBER.finditer(t))
    m = rng.choice(hits)
    n = float(m.group()) if any(c in m.group() for c in ".e") else int(m.group())
    return _with_text(f, stage, t[:m.start()] + _odd_number(rng, n) + t[m.end():])


def ir_attribute(f: File, rng: random.Random) -> bytes:
    """An attribute dropped or given another op's value."""
    t = f.header["ir"]["planned"]
    attrs = list(re.finditer(r"(\w+) = (\[[^\]]*\]|[^,}]+)", t))
    if not attrs:
        return ir_number(f, rng)
    m = rng.choice(attrs)
    other = rng.choice(attrs)
    new = rng.choice(["", f"{m.group(1)} = {other.group(2)}", f"{other.group(1)} = {m.group(2)}"])
    return _with_text(f, "planned", t[:m.start()] + new + t[m.end():])


def storage(f: File, rng: random.Random) -> bytes:
    t = f.header["ir"]["planned"]
    hits = list(_STORAGE.finditer(t))
    m, other = rng.choice(hits), rng.choice(hits)
    new = rng.choice([other.group(1), "arena[0, 64]", f"output[{rng.randint(0, 2)}]", f"input[{rng.randint(0, 2)}]",
                      "const", re.sub(r"\d+", lambda d: str(int(d.group()) + rng.choice([-64, 4, 64, 1])), m.group(1))])
    return _with_text(f, "planned", t[:m.start()] + "@ " + new + t[m.end():])


def weights(f: File, rng: random.Random) -> bytes:
    """Other weights with a matching checksum: a different model, which must still be run right."""
    if not f.weights:
        return truncation(f, rng)
    w = bytearray(f.weights)
    for _ in range(rng.randint(1, 8)):
        # floats (4-byte aligned): moderate ones, zeros, subnormals. Not huge ones (their sums overflow
        # or not by the order of summation, which no two kernels share) nor inf / NaN (rt's kernels
        # differ among themselves there: GELU(inf) is NaN on oneDNN, as in torch, inf on rt's own)
        at = rng.randrange(len(w) // 4) * 4
        value = rng.choice([0.0, rng.uniform(-1e3, 1e3), rng.uniform(-4, 4), 1e-40, -1.0])
        w[at:at + 4] = struct.pack("<f", value)
    h = f.header_copy()
    crc, done = 0, set()
    for e in h["constants"]:
        if e["offset"] not in done:
            done.add(e["offset"])
            crc = zlib.crc32(bytes(w[e["offset"]:e["offset"] + e["nbytes"]]), crc)
    h["data_crc32"] = crc
    return f.pack(h, bytes(w))


def truncation(f: File, rng: random.Random) -> bytes:
    return f.data[:rng.choice([rng.randrange(len(f.data)), len(f.data) - len(f.weights), len(f.data) - 1])]


def bit_flip(f: File, rng: random.Random) -> bytes:
    b = bytearray(f.data)
    b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


MUTATORS: dict[str, Callable[[File, random.Random], bytes]] = {
    "prefix": prefix, "header": header_field, "constants": constants_table, "ir-text": ir_text,
    "ir-line": ir_line, "ir-number": ir_number, "ir-attribute": ir_attribute, "storage": storage,
    "weights": weights, "truncation": truncation, "bit-flip": bit_flip,
}
# Structured mutants (valid checksums) reach the deep checks: they get most of the draws.
WEIGHTS = {"prefix": 1, "header": 3, "constants": 3, "ir-text": 3, "ir-line": 2, "ir-number": 6,
           "ir-attribute": 3, "storage": 4, "weights": 2, "truncation": 1, "bit-flip": 1}


def mutants(data: bytes, n: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """n (mutator name, mutant file) pairs from a good file, reproducibly from the seed."""
    f = File(data)
    rng = random.Random(seed)
    names = list(MUTATORS)
    for _ in range(n):
        name = rng.choices(names, [WEIGHTS[k] for k in names])[0]
        yield name, MUTATORS[name](f, rng)

"""The saved-model file: a versioned header and 64-byte aligned weights, mapped on load so that the
model keeps the file's bytes as loaded whatever happens to the path (MappedWeights).

Layout:  magic (8 bytes) | format version (u32) | header length (u64) | header JSON | padding |
         constant data, each array at a 64-byte aligned file offset.
The header holds each stage's IR text, the plan facts, every constant's dtype/shape/offset, and CRC32s
of the header and of the data, so a truncated, corrupt, foreign or newer file is refused before use.
A model holds one planned program (stage "planned", its facts under "plan"); a generator two
("prefill" and "decode", their facts under "programs": {name: plan}), which share the weights, each
stored once.
Nothing here imports torch.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import zlib

import numpy as np

from .abi import ALIGN, align
from .dialects.ir import DTYPES, Module, dtype_name
from .dialects.planned_check import arena_lifetimes
from .dialects.text import parse_module, print_module
from .dialects.verifier import verify_module
from .errors import ModelFileError, RtError, SaveError
from .kernels._mapped import MappedFile
from .signature import Signature
from .target import Target

MAGIC = b"RTMODEL\x00"
FORMAT_VERSION = 2          # 2: files with several programs (a generator's); 1 files read as before
_PREFIX = struct.Struct("<8sIQ")          # magic, version, header length


def _target(path: str, saved) -> Target | None:
    """The target a file was compiled for (None in files from before targets were recorded)."""
    if saved is None:
        return None
    try:
        return Target.from_dict(saved)
    except (RtError, KeyError, TypeError, ValueError) as e:
        raise _refuse(path, f"corrupt header: bad target {saved!r} ({e})") from None


def _signature(path: str, saved, planned: Module) -> Signature:
    """The saved calling convention, checked against the program's inputs and outputs."""
    try:
        sig = Signature.from_json(saved, len(planned.outputs))
    except (KeyError, TypeError, ValueError) as e:
        raise _refuse(path, f"corrupt header: bad signature ({e})") from None
    if [p for p in sig.params if p not in sig.baked] != [v.name for v in planned.inputs]:
        raise _refuse(path, f"corrupt header: the signature's arguments {sig.params} are not the program's inputs")
    return sig


def save_model(path: str, stages: dict[str, Module], programs: tuple[str, ...] = ("planned",)) -> None:
    """Write the stages; `programs` names the planned ones (their constants are stored once)."""
    planned = stages[programs[0]]
    constants = {op.attrs["name"]: stages[p].constants[op.attrs["name"]]
                 for p in programs for op in stages[p].ops if op.name == "const"}
    entries, arrays, placed, offset = [], [], {}, 0
    for name, arr in constants.items():
        arr = np.asarray(arr, order="C")     # (ascontiguousarray makes a 0-d array 1-d)
        # tied weights (e.g. GPT-2's embedding and LM head) are one array under two names: store it once
        key = (arr.__array_interface__["data"][0], arr.shape, arr.dtype.str)
        if key not in placed:
            placed[key] = offset
            arrays.append(arr)
            offset = align(offset + arr.nbytes)
        entries.append({"name": name, "dtype": dtype_name(arr.dtype), "shape": list(arr.shape),
                        "offset": placed[key], "nbytes": int(arr.nbytes)})
    data_crc = 0
    for arr in arrays:
        data_crc = zlib.crc32(memoryview(arr).cast("B"), data_crc)
    header = {
        "format_version": FORMAT_VERSION,
        "ir": {stage: print_module(m) for stage, m in stages.items()},
        **({"plan": planned.meta["plan"]} if programs == ("planned",) else
           {"programs": {p: stages[p].meta["plan"] for p in programs}}),
        "target": planned.meta["target"].to_dict() if planned.meta.get("target") else None,
        "signature": planned.meta["signature"].to_json() if planned.meta.get("signature") else None,
        "constants": entries,
        "data_crc32": data_crc,
    }
    blob = json.dumps(header).encode()
    data_start = align(_PREFIX.size + len(blob) + 4)
    with write_atomically(path) as f:
        f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(blob)))
        f.write(blob)
        f.write(struct.pack("<I", zlib.crc32(blob)))
        for arr, start in zip(arrays, sorted(set(placed.values()))):
            f.write(b"\0" * (data_start + start - f.tell()))
            f.write(memoryview(arr).cast("B"))


@contextlib.contextmanager
def write_atomically(path: str, mode: str = "wb"):
    """A new file to write `path` through (a unique name beside it): flushed to disk and renamed over
    `path` once complete, so readers see the old file or the new one, a failed write leaves `path` as
    it was and no temporary file behind, and concurrent writers each leave a whole file. Any OSError
    becomes SaveError naming `path`."""
    tmp = f"{path}.{os.urandom(4).hex()}.tmp"     # not secrets: it loads OpenSSL (~1 MiB resident)
    try:
        with open(tmp, mode.replace("w", "x")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())          # on disk before it takes the name: a crash leaves old or new
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise SaveError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def _refuse(path: str, why: str) -> ModelFileError:
    return ModelFileError(f"{path}: {why}")


class MappedWeights:
    """The file's weights, as loaded: a leased shared mapping of the file, kept as it was if the file is
    opened for writing (rt.kernels._mapped). `drop(arr)` gives a constant's pages back to the OS while
    they are the file's (they come back from it if read again): for weights the runtime has copied
    into its own layout. `keep(arrays)` names the constants the program still reads, the only ones
    copied when the file changes; `keep_all()` asks for every one again (the op-by-op and reference
    executors read them all), which fails once the file has changed and the others are gone."""

    def __init__(self, path: str, mapped):
        self.path = path
        self.mapped = mapped

    def _range(self, arr: np.ndarray) -> tuple[int, int] | None:
        start = arr.ctypes.data - self.mapped.address
        return (start, arr.nbytes) if 0 <= start <= self.mapped.size - arr.nbytes else None

    def drop(self, arr: np.ndarray) -> None:
        where = self._range(arr)
        if where is not None:
            self.mapped.drop(*where)

    def keep(self, arrays) -> None:
        self.mapped.keep([r for r in map(self._range, arrays) if r is not None])

    def keep_all(self, why: str) -> None:
        if not self.mapped.keep(None):
            raise _refuse(self.path, f"the file was opened for writing after it was loaded; the model still "
                                     f"runs on the weights it reads, but {why} needs all of them: load it again")

    @property
    def state(self) -> str:
        """"leased" (the file's pages), "private" (copied at load: no lease) or "detached" (copied
        when someone opened the file to write it)."""
        return self.mapped.state


def _is_count(value) -> bool:
    return type(value) is int and value >= 0


def programs_of(header: dict) -> dict:
    """{planned program's stage: its plan facts}: "programs" in a generator's file, else "planned"."""
    return header["programs"] if "programs" in header else {"planned": header["plan"]}


def _check_header(path: str, header, data_start: int, size: int) -> None:
    """Refuse a header whose fields are missing or of the wrong kind, naming the first wrong one."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise _refuse(path, f"corrupt header: {what}")

    need(isinstance(header, dict), "not a JSON object")
    several = "programs" in header
    for key, kind in (("ir", dict), ("programs" if several else "plan", dict), ("constants", list),
                      ("data_crc32", int)):
        need(isinstance(header.get(key), kind), f"{key!r} is missing or not a JSON {kind.__name__}")
    need(all(isinstance(text, str) for text in header["ir"].values()), "an 'ir' stage is not text")
    need(bool(programs_of(header)), "'programs' is empty")
    for name, plan in programs_of(header).items():
        need(isinstance(header["ir"].get(name), str), f"no planned program ('ir' has no text for {name!r})")
        need(isinstance(plan, dict), f"the plan of {name!r} is not a JSON dict")
        for key in ("arena_bytes", "lower_bound_bytes", "no_reuse_bytes"):
            need(_is_count(plan.get(key)), f"{name + ' ' if several else ''}plan {key!r} is missing or not a byte count")
    for i, e in enumerate(header["constants"]):
        need(isinstance(e, dict) and isinstance(e.get("name"), str), f"constant #{i} has no name")
        where = f"constant {e['name']!r}"
        need(isinstance(e.get("dtype"), str) and e["dtype"] in DTYPES, f"{where} has unknown dtype {e.get('dtype')!r}")
        need(isinstance(e.get("shape"), list) and all(_is_count(d) for d in e["shape"]),
             f"{where} has shape {e.get('shape')!r}, not a list of sizes")
        need(_is_count(e.get("offset")) and e["offset"] % ALIGN == 0,
             f"{where} has offset {e.get('offset')!r}, not a multiple of {ALIGN}")
        nbytes = math.prod(e["shape"]) * DTYPES[e["dtype"]].itemsize
        need(e.get("nbytes") == nbytes, f"{where} of shape {e['shape']} {e['dtype']} is {nbytes} bytes, "
                                        f"the header says {e.get('nbytes')!r}")
        end = data_start + e["offset"] + nbytes
        if end > size:
            raise _refuse(path, f"truncated ({where} ends at byte {end}, the file has {size})")


def load_model(path: str) -> tuple[dict[str, Module], MappedWeights]:
    """Read a saved model: (stages, the mapped weights); the plan facts are each planned stage's
    meta["plan"], its target meta["target"] (programs_of names the planned stages). Their constants are
    views of the mapped file; MappedWeights gives their pages back once the runtime holds its own copies.
    A file that cannot be read, or is malformed anywhere, raises ModelFileError naming the first fault."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _PREFIX.size:
                raise _refuse(path, "not an rt model file (too short)")
            mapped = MappedFile(f.fileno(), size)      # from here on, the bytes as loaded
    except OSError as e:
        raise _refuse(path, f"cannot read: {e.strerror or e}") from None
    view = memoryview(mapped)
    magic, version, hlen = _PREFIX.unpack(view[:_PREFIX.size])
    if magic != MAGIC:
        raise _refuse(path, "not an rt model file (bad magic bytes)")
    if version > FORMAT_VERSION:
        raise _refuse(path, f"written by a newer rt (format {version}; this rt reads up to "
                            f"{FORMAT_VERSION}): upgrade rt")
    if _PREFIX.size + hlen + 4 > size:
        raise _refuse(path, "truncated (header cut short)")
    blob = bytes(view[_PREFIX.size:_PREFIX.size + hlen])
    (crc,) = struct.unpack("<I", view[_PREFIX.size + hlen:_PREFIX.size + hlen + 4])
    if zlib.crc32(blob) != crc:
        raise _refuse(path, "corrupt header (checksum mismatch)")
    try:
        header = json.loads(blob)
    except (ValueError, RecursionError):
        raise _refuse(path, "corrupt header (not JSON)") from None
    data_start = align(_PREFIX.size + hlen + 4)
    _check_header(path, header, data_start, size)
    constants = {}
    data_crc = 0
    checked = set()
    for e in header["constants"]:
        arr = np.frombuffer(mapped, dtype=DTYPES[e["dtype"]], count=math.prod(e["shape"]),
                            offset=data_start + e["offset"]).reshape(e["shape"])
        if e["offset"] not in checked:
            checked.add(e["offset"])
            data_crc = zlib.crc32(memoryview(arr).cast("B"), data_crc)
        constants[e["name"]] = arr
    if data_crc != header["data_crc32"]:
        raise _refuse(path, "corrupt weights (checksum mismatch)")
    weights = MappedWeights(path, mapped)
    mapped.drop(0, size)   # read only for the checksum: what runs will fault back in what it reads
    programs = programs_of(header)
    try:
        stages = {stage: parse_module(text, constants if stage in programs else None)
                  for stage, text in header["ir"].items()}
    except RtError as e:
        raise _refuse(path, f"corrupt IR: {e}") from None
    for name, plan in programs.items():
        _check_program(path, stages[name], plan, header, constants)
    unused = sorted(set(constants) - {op.attrs["name"] for p in programs for op in stages[p].ops if op.name == "const"})
    if unused:
        raise _refuse(path, f"the constants table lists {unused[0]!r}, which the planned program never reads")
    return stages, weights


def _check_program(path: str, planned: Module, plan: dict, header: dict, constants: dict) -> None:
    """One planned program of a file: its constants present, its facts attached, verified, its storage
    indices in range and its arena no larger than its buffers need."""
    for op in planned.ops:
        if op.name == "const" and op.attrs["name"] not in constants:
            raise _refuse(path, f"the planned program reads constant {op.attrs['name']!r}, which the file lacks")
    planned.meta["plan"] = plan
    planned.meta["target"] = _target(path, header.get("target"))
    if header.get("signature") is not None:
        planned.meta["signature"] = _signature(path, header["signature"], planned)
    try:
        verify_module(planned, "planned")
    except RtError as e:
        raise _refuse(path, f"the planned program does not verify: {e}") from None
    counts = {"input": len(planned.inputs), "output": len(planned.outputs),
              "state": sum(op.name == "state" for op in planned.ops)}
    for v in planned.inputs + [op.result for op in planned.ops]:
        st = v.storage
        if st.kind in counts and not (type(st.index) is int and 0 <= st.index < counts[st.kind]):
            raise _refuse(path, f"%{v.name} is stored in {st.kind}[{st.index}]; the program has "
                                f"{counts[st.kind]} {st.kind}(s)")
    buffers = [(v.storage.offset, v.storage.size) for v, _, _ in arena_lifetimes(planned)]
    buffers += [tuple(op.attrs["scratch"][:2]) for op in planned.ops if op.attrs.get("scratch")]
    used = align(max((off + size for off, size in buffers), default=0))
    no_reuse = sum(align(size) for _, size in buffers)     # what any plan of these buffers fits in
    if plan["arena_bytes"] > min(used, no_reuse):
        raise _refuse(path, f"corrupt plan: an arena of {plan['arena_bytes']} bytes for a program that uses "
                            f"{used}, and whose buffers need {no_reuse} bytes without any reuse")

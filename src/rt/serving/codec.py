"""The HTTP API's bodies, as bytes: a request's inputs from JSON (`{"inputs": {name: nested list}}` or
`{"inputs": [one per input, in order]}`), from `.npy` bytes (a model of one input) or from `.npz` (arrays
keyed by input name); the outputs as JSON (each output's dtype, shape and data, by name), `.npy` (one
output) or `.npz` (by output name); an error as JSON `{"error": family, "message": rt's message}` with
its HTTP status. Nothing here knows of Ray (rt.serving.replica puts these bytes on the wire)."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from ..errors import IndexOutOfRangeError, InputError, ModelFileError, RtError, UsageError
from .spec import ModelSpec

JSON, NPY, NPZ = "application/json", "application/x-npy", "application/x-npz"

# most specific first: a token id out of range is the request's fault, whatever kernel found it
_STATUS = [(IndexOutOfRangeError, 400), (InputError, 400), (UsageError, 400), (ModelFileError, 503), (RtError, 500)]

# what each numpy kind of a JSON array may become: integers take only integers, booleans only booleans
_JSON_KINDS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile)
_KIND_NAMES = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats", "U": "strings", "O": "mixed values"}


def media_type(header: str | None) -> str:
    """The media type of a Content-Type header, without its parameters (none: JSON)."""
    return (header or JSON).split(";")[0].strip().lower() or JSON


def decode_inputs(body: bytes, content_type: str, spec: ModelSpec) -> tuple[list, dict]:
    """A request body as (positional, by-name) arrays, each converted to its input's dtype where JSON
    leaves it open; rt.InputError when the body cannot be read. Names, shapes and sizes are
    ModelSpec.check's to judge."""
    if content_type == JSON:
        return _from_json(body, spec)
    if content_type == NPY:
        if len(spec.inputs) != 1:
            raise InputError(f"a {NPY} body holds one array; this model takes {len(spec.inputs)} inputs "
                             f"({', '.join(spec.input_names)}): send an {NPZ} (np.savez) keyed by input name")
        return [_read(np.lib.format.read_array, body, "a .npy file")], {}
    if content_type == NPZ:
        return [], _from_npz(body, spec)
    raise InputError(f"cannot read a request body of type {content_type!r}; send {JSON}, {NPY} or {NPZ}")


def _read(reader, body: bytes, what: str):
    try:
        return reader(io.BytesIO(body), allow_pickle=False)
    except _UNREADABLE as e:
        raise InputError(f"the request body is not {what} ({e})") from None


def _from_npz(body: bytes, spec: ModelSpec) -> dict[str, np.ndarray]:
    z = _read(np.load, body, "an .npz file")
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise InputError(f"the request body is a .npy file, sent as {NPZ}; send it as {NPY}")
    with z:
        arrays = {}
        for member in z.zip.infolist():       # a member larger than its input can be is not unpacked
            name = member.filename.removesuffix(".npy")
            if member.file_size > spec.max_nbytes.get(name, 0):
                raise InputError(f"the .npz member {name!r} is not one of the model's inputs "
                                 f"({', '.join(spec.input_names)}) or is larger than that input can be")
            try:
                arrays[name] = z[name]
            except _UNREADABLE as e:
                raise InputError(f"the .npz member {name!r} is not a .npy array ({e})") from None
        return arrays


def _from_json(body: bytes, spec: ModelSpec) -> tuple[list, dict]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"the request body is not JSON ({e})") from None
    names, dtypes = spec.input_names, {t.name: t.dtype for t in spec.inputs}
    inputs = doc["inputs"] if isinstance(doc, dict) and set(doc) == {"inputs"} else None
    if isinstance(inputs, dict):
        return [], {k: _json_array(k, v, dtypes.get(k)) for k, v in inputs.items()}
    if isinstance(inputs, list) and len(inputs) <= len(names):
        return [_json_array(k, v, dtypes[k]) for k, v in zip(names, inputs)], {}
    raise InputError('a JSON request is {"inputs": {"<input name>": <nested list>, ...}} or {"inputs": '
                     f"[<one nested list per input, in order>]}}; the model's {len(names)} input(s): {', '.join(names)}")


def _json_array(name: str, value, dtype: np.dtype | None) -> np.ndarray:
    """A JSON value as an array of the input's dtype (an unknown input's as it comes: the check names it)."""
    try:
        arr = np.array(value)
    except (ValueError, TypeError) as e:
        raise InputError(f"input {name!r} is not a rectangular nested list of numbers ({e})") from None
    if dtype is None:
        return arr
    if arr.size and arr.dtype.kind not in _JSON_KINDS[dtype.kind]:
        raise InputError(f"input {name!r} takes {dtype} values; the JSON holds "
                         f"{_KIND_NAMES.get(arr.dtype.kind, arr.dtype.kind)}")
    out = arr.astype(dtype)
    if dtype.kind in "iu" and not np.array_equal(out, arr):
        raise InputError(f"input {name!r}: values outside the range of {dtype}")
    return out


def answers_json(accept: str | None, request_type: str) -> bool:
    """Whether the answer is JSON (else .npy / .npz): as the first of JSON, .npy and .npz the Accept
    header names, else as the request came."""
    for item in (accept or "").split(","):
        wanted = media_type(item) if item.strip() else ""
        if wanted in (JSON, NPY, NPZ):
            return wanted == JSON
    return request_type == JSON


def encode_outputs(names: list[str], outs: list[np.ndarray], as_json: bool) -> tuple[bytes, str]:
    """(body, media type) of a call's outputs: JSON, or .npy for one output and .npz (by output name)
    for several."""
    if as_json:
        doc = {"outputs": {n: {"dtype": str(o.dtype), "shape": list(o.shape), "data": o.tolist()}
                           for n, o in zip(names, outs)}}
        return json.dumps(doc).encode(), JSON
    buf = io.BytesIO()
    if len(outs) == 1:
        np.save(buf, outs[0], allow_pickle=False)
        return buf.getvalue(), NPY
    np.savez(buf, **dict(zip(names, outs)))
    return buf.getvalue(), NPZ


def error_status(e: Exception) -> int:
    """The HTTP status of an error: a bad request 400, a model that cannot load 503, anything else 500."""
    return next((status for cls, status in _STATUS if isinstance(e, cls)), 500)


def error_body(e: Exception) -> bytes:
    """`{"error": family, "message": ...}`: rt's own message for an rt error; any other exception is a
    bug in rt, named by its type (its traceback goes to the replica's log, never to the client)."""
    family = type(e).__name__ if isinstance(e, RtError) else "InternalError"
    message = str(e) if isinstance(e, RtError) else f"{type(e).__name__}: {e}"
    return json.dumps({"error": family, "message": message}).encode()

"""Textual form of every dialect: a printer and a parser that round-trip exactly.

    module @mlp(%x: tensor<32x512xf32>) -> (tensor<32x512xf32>) {
      %w0 = const "0.weight" : tensor<512x512xf32>
      %0 = fused.matmul %x, %w0, none {transpose_b = true} : tensor<32x512xf32>
      return %0
    }

Absent optional operands print as `none`. Planned values carry their storage after the type:
`@ arena[0, 4096]`, `@ input[0]`, `@ output[0]`, `@ const`, `@ view(%3, 128)` or
`@ view(%3, 128, [768, 1])` (byte offset from the base, element strides).
Constants are named, never embedded: `parse` takes the arrays separately.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from ..errors import IRParseError
from .ir import Module, Operation, Storage, TensorType, Value
from .symbolic import Sym, format_size, parse_size


# ---- printing -------------------------------------------------------------------------------
def format_attr(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Sym):
        return format_size(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_attr(x) for x in value) + "]"
    raise TypeError(f"attribute value {value!r} has no text form")


def _format_storage(s: Storage) -> str:
    if s.kind == "arena":
        return f"arena[{s.offset}, {format_size(s.size)}]"
    if s.kind in ("input", "output", "state"):
        return f"{s.kind}[{s.index}]"
    if s.kind == "const":
        return "const"
    if s.kind == "view":
        strides = "" if s.strides is None else ", " + format_attr(list(s.strides))
        return f"view(%{s.base.name}, {format_size(s.offset)}{strides})"
    raise ValueError(f"unknown storage kind {s.kind!r}")


def format_op(op: Operation) -> str:
    res = op.result
    if op.name == "const":
        text = f"%{res.name} = const {json.dumps(op.attrs['name'])} : {res.type}"
    else:
        operands = ", ".join("none" if v is None else f"%{v.name}" for v in op.operands)
        text = f"%{res.name} = {op.name}"
        if operands:
            text += " " + operands
        if op.attrs:
            text += " {" + ", ".join(f"{k} = {format_attr(op.attrs[k])}" for k in sorted(op.attrs)) + "}"
        text += f" : {res.type}"
    if res.storage is not None:
        text += " @ " + _format_storage(res.storage)
    return text


def print_module(module: Module) -> str:
    args = ", ".join(f"%{v.name}: {v.type}" + (f" @ {_format_storage(v.storage)}" if v.storage else "")
                     for v in module.inputs)
    outs = ", ".join(str(v.type) for v in module.outputs)
    sizes = module.meta.get("symbols") or {}
    where = " where " + ", ".join(f"{k} in [{lo}, {hi}]" for k, (lo, hi) in sizes.items()) if sizes else ""
    lines = [f"module @{module.name}({args}) -> ({outs}){where} {{"]
    lines += ["  " + format_op(op) for op in module.ops]
    lines.append("  return " + ", ".join(f"%{v.name}" for v in module.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---- parsing --------------------------------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<type>tensor<[^>]*>)
  | (?P<size>\?\([^)]*\))
  | (?P<value>%[A-Za-z0-9_.$\-]+)
  | (?P<symbol>@[A-Za-z0-9_.$\-]+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?|-inf\b)
  | (?P<arrow>->)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[(){}\[\],:=@+])
""", re.VERBOSE)


_DIM = re.compile(r"(\d+|\?\([^)]*\))x")


def _size(text: str):
    return parse_size(text[2:-1]) if text.startswith("?(") else int(text)


def parse_type(text: str) -> TensorType:
    inner = text[len("tensor<"):-1]
    dims, pos = [], 0
    while (m := _DIM.match(inner, pos)):
        dims.append(m.group(1))
        pos = m.end()
    try:
        return TensorType(tuple(_size(d) for d in dims), inner[pos:])
    except (ValueError, TypeError) as e:
        raise IRParseError(f"bad tensor type {text!r}: {e}") from None


class _Parser:
    def __init__(self, text: str, constants: dict[str, np.ndarray] | None):
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        line = 1
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise IRParseError(f"line {line}: unexpected character {text[pos]!r}")
            kind = m.lastgroup
            if kind != "ws":
                self.tokens.append((kind, m.group(), line))
            line += m.group().count("\n")
            pos = m.end()
        self.i = 0
        self.constants = constants
        self.values: dict[str, Value] = {}

    # token helpers
    def peek(self, k: int = 0):
        j = self.i + k
        return self.tokens[j] if j < len(self.tokens) else ("eof", "", -1)

    def next(self):
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, kind: str, text: str | None = None) -> str:
        k, t, line = self.next()
        if k != kind or (text is not None and t != text):
            want = text or kind
            raise IRParseError(f"line {line}: expected {want!r}, got {t!r}")
        return t

    def accept(self, kind: str, text: str | None = None) -> bool:
        k, t, _ = self.peek()
        if k == kind and (text is None or t == text):
            self.i += 1
            return True
        return False

    def lookup(self, token: str, line: int) -> Value:
        name = token[1:]
        if name not in self.values:
            raise IRParseError(f"line {line}: use of undefined value %{name}")
        return self.values[name]

    def define(self, value: Value, line: int) -> None:
        if value.name in self.values:
            raise IRParseError(f"line {line}: value %{value.name} defined twice")
        self.values[value.name] = value

    # grammar
    def attr_value(self) -> Any:
        kind, t, line = self.next()
        if kind == "punct" and t == "[":
            items = []
            if not self.accept("punct", "]"):
                items.append(self.attr_value())
                while self.accept("punct", ","):
                    items.append(self.attr_value())
                self.expect("punct", "]")
            return items
        if kind == "string":
            return json.loads(t)
        if kind == "size":
            return _size(t)
        if kind == "number":
            if t == "-inf":
                return -math.inf
            return float(t) if any(c in t for c in ".eE") else int(t)
        if kind == "ident":
            named = {"true": True, "false": False, "none": None, "inf": math.inf, "nan": math.nan}
            if t in named:
                return named[t]
        raise IRParseError(f"line {line}: bad attribute value {t!r}")

    def count(self, sized: bool = False):
        """A storage's offset, size or index: an integer >= 0 (sized: or a size in the symbols)."""
        line = self.peek()[2]
        v = self.attr_value()
        if not ((type(v) is int and v >= 0) or (sized and isinstance(v, Sym))):
            raise IRParseError(f"line {line}: expected a count (an integer >= 0), got {v!r}")
        return v

    def storage(self) -> Storage:
        kind, t, line = self.next()
        if t in ("arena", "input", "output", "state"):
            self.expect("punct", "[")
            a = self.count()
            if t == "arena":
                self.expect("punct", ",")
                size = self.count()
                self.expect("punct", "]")
                return Storage("arena", offset=a, size=size)
            self.expect("punct", "]")
            return Storage(t, index=a)
        if t == "const":
            return Storage("const")
        if t == "view":
            self.expect("punct", "(")
            k2, vt, l2 = self.next()
            base = self.lookup(vt, l2)
            self.expect("punct", ",")
            offset = self.count(sized=True)
            strides = None
            if self.accept("punct", ","):
                strides = self.attr_value()
                if not (isinstance(strides, list) and all(type(s) is int or isinstance(s, Sym) for s in strides)):
                    raise IRParseError(f"line {l2}: view strides must be a list of integers, got {strides!r}")
                strides = tuple(strides)
            self.expect("punct", ")")
            return Storage("view", offset=offset, base=base, strides=strides)
        raise IRParseError(f"line {line}: unknown storage {t!r}")

    def operation(self) -> Operation:
        _, res_tok, line = self.next()
        self.expect("punct", "=")
        kind, name, _ = self.next()
        if kind != "ident":
            raise IRParseError(f"line {line}: expected an op name, got {name!r}")
        operands: list[Value | None] = []
        attrs: dict[str, Any] = {}
        if name == "const":
            attrs["name"] = json.loads(self.expect("string"))
        else:
            while self.peek()[0] == "value" or self.peek()[1] == "none":
                k, t, l = self.next()
                operands.append(None if t == "none" else self.lookup(t, l))
                if not self.accept("punct", ","):
                    break
            if self.accept("punct", "{"):
                while True:
                    key = self.expect("ident")
                    self.expect("punct", "=")
                    attrs[key] = self.attr_value()
                    if not self.accept("punct", ","):
                        break
                self.expect("punct", "}")
        self.expect("punct", ":")
        rtype = parse_type(self.expect("type"))
        result = Value(res_tok[1:], rtype)
        if self.accept("punct", "@"):
            result.storage = self.storage()
        op = Operation(name, operands, attrs, result)
        result.producer = op
        self.define(result, line)
        return op

    def module(self) -> Module:
        self.expect("ident", "module")
        name = self.expect("symbol")[1:]
        module = Module(name)
        self.expect("punct", "(")
        if not self.accept("punct", ")"):
            while True:
                _, vt, line = self.next()
                self.expect("punct", ":")
                v = Value(vt[1:], parse_type(self.expect("type")))
                if self.accept("punct", "@"):
                    v.storage = self.storage()
                self.define(v, line)
                module.inputs.append(v)
                if not self.accept("punct", ","):
                    break
            self.expect("punct", ")")
        self.expect("arrow")
        self.expect("punct", "(")
        declared_out: list[TensorType] = []
        if not self.accept("punct", ")"):
            while True:
                declared_out.append(parse_type(self.expect("type")))
                if not self.accept("punct", ","):
                    break
            self.expect("punct", ")")
        if self.accept("ident", "where"):
            sizes = module.meta["symbols"] = {}
            while True:
                sym = self.expect("ident")
                self.expect("ident", "in")
                self.expect("punct", "[")
                lo = int(self.expect("number"))
                self.expect("punct", ",")
                hi = int(self.expect("number"))
                self.expect("punct", "]")
                sizes[sym] = (lo, hi)
                if not self.accept("punct", ","):
                    break
        self.expect("punct", "{")
        while not (self.peek()[0] == "ident" and self.peek()[1] == "return"):
            if self.peek()[0] != "value":
                _, t, line = self.peek()
                raise IRParseError(f"line {line}: expected an operation or 'return', got {t!r}")
            module.ops.append(self.operation())
        _, _, line = self.next()
        while self.peek()[0] == "value":
            _, t, l = self.next()
            module.outputs.append(self.lookup(t, l))
            if not self.accept("punct", ","):
                break
        self.expect("punct", "}")
        if [v.type for v in module.outputs] != declared_out:
            raise IRParseError(f"line {line}: return types do not match the module signature")
        for op in module.ops:
            if op.name == "const":
                cname = op.attrs["name"]
                if self.constants is not None and cname in self.constants:
                    module.constants[cname] = self.constants[cname]
        return module


def parse_module(text: str, constants: dict[str, np.ndarray] | None = None) -> Module:
    """Parse a module's text. `constants` supplies the arrays behind `const "name"` ops."""
    return _Parser(text, constants).module()

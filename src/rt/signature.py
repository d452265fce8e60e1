"""How a compiled model is called and what it returns, as the model did: the non-tensor arguments fixed at
compile time, the structure of the outputs (a ModelOutput's fields, a named tuple, nested tuples, lists and
dicts) and the outputs rt left out. Saved with the model (JSON) and read without torch.

An output structure is a tree of nodes: `tensor` leaves (the program's outputs, in order), `none`, and
`tuple`, `list`, `dict` (with its keys), `namedtuple` and `record` (a ModelOutput: fields by name) nodes.
The class of a `namedtuple` or `record` node is the model's own when it was compiled in this process, or
when its module is already imported here; otherwise the outputs come back as `NamedOutputs` by the same
names."""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import InputError

_JSON_SCALARS = (bool, int, float, str, type(None))


class DroppedOutputWarning(UserWarning):
    """Compiling left an output of the model out (e.g. the KV cache an HF model returns): says which."""


class NamedOutputs(tuple):
    """Outputs by name, for a model whose output class is not at hand (e.g. loaded without torch): like a
    ModelOutput or a named tuple, `out.logits`, `out["logits"]`, `out[0]`, `out.keys()`, `out.items()`."""

    def __new__(cls, type_name: str, fields: list[str], values):
        self = super().__new__(cls, values)
        self._type_name, self._fields = type_name, tuple(fields)
        return self

    def __getattr__(self, name: str):
        try:
            return self[self._fields.index(name)]
        except ValueError:
            raise AttributeError(f"{self._type_name} has no output {name!r}; it has: {', '.join(self._fields)}") \
                from None

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            key = self._fields.index(key)
        return tuple.__getitem__(self, key)

    def keys(self) -> tuple[str, ...]:
        return self._fields

    def values(self) -> tuple:
        return tuple(self)

    def items(self) -> list[tuple[str, Any]]:
        return list(zip(self._fields, self))

    def to_tuple(self) -> tuple:
        return tuple(self)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={type(v).__name__}{list(getattr(v, 'shape', []))}" for k, v in self.items())
        return f"{self._type_name}({inner})"


@dataclass
class Node:
    """One node of an output structure. type_name: 'module.QualName' of a namedtuple or record; keys: a
    dict's keys or the fields of a namedtuple / record; cls: the live class (not saved)."""
    kind: str
    children: list["Node"] = field(default_factory=list)
    keys: list = field(default_factory=list)
    type_name: str = ""
    cls: type | None = None

    def to_json(self) -> dict:
        out: dict = {"kind": self.kind}
        if self.children:
            out["children"] = [c.to_json() for c in self.children]
        if self.keys:
            out["keys"] = list(self.keys)
        if self.type_name:
            out["type"] = self.type_name
        return out

    @classmethod
    def from_json(cls, d: dict) -> "Node":
        if not isinstance(d, dict) or d.get("kind") not in _BUILD:
            raise ValueError(f"not an output node: {d!r}")
        node = cls(d["kind"], [cls.from_json(c) for c in d.get("children", [])], list(d.get("keys", [])),
                   str(d.get("type", "")))
        if node.kind in ("dict", "namedtuple", "record") and len(node.keys) != len(node.children):
            raise ValueError(f"{node.kind} node with {len(node.keys)} keys and {len(node.children)} children")
        return node

    def leaves(self) -> int:
        return 1 if self.kind == "tensor" else sum(c.leaves() for c in self.children)

    def paths(self, prefix: str = "") -> list[str]:
        """Each tensor leaf's name: its path of keys and indices ('logits', 'hidden_states.0')."""
        if self.kind == "tensor":
            return [prefix or "output"]
        names = self.keys if self.keys else range(len(self.children))
        return [p for k, c in zip(names, self.children) for p in c.paths(f"{prefix}.{k}" if prefix else str(k))]

    def resolve(self) -> type | None:
        """The node's class: the live one, else the named class if its module is imported here."""
        if self.cls is None and self.type_name:
            module, _, qualname = self.type_name.rpartition(".")
            if module in sys.modules:
                obj: Any = importlib.import_module(module)
                for part in qualname.split("."):
                    obj = getattr(obj, part, None)
                self.cls = obj if isinstance(obj, type) else None
        return self.cls

    def build(self, leaves) -> Any:
        """The model's output structure around `leaves` (an iterator over the program's outputs)."""
        return _BUILD[self.kind](self, [c.build(leaves) for c in self.children], leaves)


def _build_namedtuple(node: Node, items: list, _) -> Any:
    cls = node.resolve()
    if cls is None:
        return NamedOutputs(node.type_name.rpartition(".")[2], node.keys, items)
    return cls(*items) if hasattr(cls, "_make") else cls(items)    # a namedtuple, or a torch.return_types


def _build_record(node: Node, items: list, _) -> Any:
    cls = node.resolve()
    if cls is None:
        return NamedOutputs(node.type_name.rpartition(".")[2], node.keys, items)
    return cls(**dict(zip(node.keys, items)))


_BUILD: dict[str, Callable[[Node, list, Any], Any]] = {
    "tensor": lambda node, items, leaves: next(leaves),
    "none": lambda node, items, leaves: None,
    "tuple": lambda node, items, leaves: tuple(items),
    "list": lambda node, items, leaves: list(items),
    "dict": lambda node, items, leaves: dict(zip(node.keys, items)),
    "namedtuple": _build_namedtuple,
    "record": _build_record,
}


def _flat(n: int) -> Node:
    """The structure of a program with no recorded one: one output bare, several as a tuple."""
    return Node("tensor") if n == 1 else Node("tuple", [Node("tensor") for _ in range(n)])


@dataclass
class Signature:
    """params: every argument of the model in calling order, tensor inputs and fixed ones alike;
    baked: the non-tensor arguments fixed at compile time, by name (a value other than a bool, int, float,
    str or None as its repr); outputs: the output structure;
    dropped: one line per output rt left out (and why)."""
    params: list[str] = field(default_factory=list)
    baked: dict[str, Any] = field(default_factory=dict)
    outputs: Node | None = None
    dropped: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.baked = {k: v if isinstance(v, _JSON_SCALARS) else repr(v) for k, v in self.baked.items()}

    @classmethod
    def flat(cls, inputs: list[str], n_outputs: int) -> "Signature":
        return cls(list(inputs), {}, _flat(n_outputs))

    def packer(self) -> Callable[[list], Any] | None:
        """The function that gives the program's outputs the model's structure; None when that is the
        default (one output bare, several as a plain tuple), which the fast call path makes itself."""
        tree = self.outputs
        if tree is None or tree.kind == "tensor" or (
                tree.kind == "tuple" and len(tree.children) > 1 and all(c.kind == "tensor" for c in tree.children)):
            return None
        return lambda outs: tree.build(iter(outs))

    def check_baked(self, name: str, value: Any) -> None:
        """A fixed argument given at call time must have the value it was compiled with."""
        want = self.baked[name]
        if not ((type(value) is type(want) and value == want) or repr(value) == want):
            raise InputError(f"argument {name!r} was fixed to {want!r} when the model was compiled, got {value!r}; "
                             "compile the model again to change it")

    def describe(self) -> list[str]:
        """What `rt inspect` shows beside the inputs and outputs."""
        lines = []
        if self.baked:
            lines.append("fixed arguments: " + ", ".join(f"{k}={v!r}" for k, v in self.baked.items()))
        if self.outputs is not None and self.outputs.kind not in ("tensor", "tuple"):
            lines.append(f"output structure: {self.outputs.type_name or self.outputs.kind}")
        lines += [f"left out: {d}" for d in self.dropped]
        return lines

    def to_json(self) -> dict:
        return {"params": self.params,
                "baked": self.baked,
                "outputs": self.outputs.to_json() if self.outputs is not None else None,
                "dropped": self.dropped}

    @classmethod
    def from_json(cls, d: dict, n_outputs: int) -> "Signature":
        """Raises ValueError on a malformed signature (or one whose leaves are not the program's outputs)."""
        if not isinstance(d, dict) or not isinstance(d.get("params"), list) or not isinstance(d.get("baked"), dict):
            raise ValueError("not a signature")
        tree = Node.from_json(d["outputs"]) if d.get("outputs") is not None else _flat(n_outputs)
        if tree.leaves() != n_outputs:
            raise ValueError(f"an output structure of {tree.leaves()} tensors for a program of {n_outputs} outputs")
        return cls([str(p) for p in d["params"]], dict(d["baked"]), tree, [str(x) for x in d.get("dropped", [])])

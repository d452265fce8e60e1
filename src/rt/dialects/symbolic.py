"""Symbolic sizes: a dynamic dim (`S`) and every size, stride and offset derived from dims (`12*S`, `S*S`).

A `Sym` is a polynomial in named size symbols with integer coefficients, kept canonical so that equal
sizes compare equal; arithmetic with ints and other Syms gives a Sym, or an int when the symbols cancel.
Every symbol is a size of at least 1 (rt refuses a range that admits 0). A question whose answer depends
on the symbol's value (`S > 1`, `int(S)`) raises `SymbolicSizeError`: the code asking it must decide for
every size, or refuse the dynamic dim with the op's name.

Text form: a symbol alone prints as itself (`S`), a derived size as `(12*S)`; in a tensor type
`tensor<1x?Sx768xf32>` / `tensor<?(12*S)xf32>`.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import re
from typing import Iterator, Mapping, Union

from ..errors import LoweringError

Monomial = tuple[str, ...]          # sorted symbol names, with repeats: ("S", "S") is S*S

# The ranges of the symbols of the module being compiled: what comparisons may assume (default [1, inf)).
_RANGES: contextvars.ContextVar[Mapping[str, tuple[int, int]]] = contextvars.ContextVar("rt_size_ranges", default={})


@contextlib.contextmanager
def size_ranges(ranges: Mapping[str, tuple[int, int]] | None) -> Iterator[None]:
    """Let comparisons of sizes use these symbol ranges (a module's meta["symbols"]) inside the block."""
    token = _RANGES.set({**_RANGES.get(), **(ranges or {})})
    try:
        yield
    finally:
        _RANGES.reset(token)


class SymbolicSizeError(LoweringError):
    """A decision rt would have to make per size on a dynamic dim."""


class Sym:
    __slots__ = ("terms",)

    def __init__(self, terms: Mapping[Monomial, int]):
        self.terms: tuple[tuple[Monomial, int], ...] = tuple(sorted((m, c) for m, c in terms.items() if c))

    @staticmethod
    def symbol(name: str) -> "Sym":
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"a size symbol is a name, got {name!r}")
        return Sym({(name,): 1})

    # ---- arithmetic ------------------------------------------------------------------------
    @staticmethod
    def _terms(x) -> dict[Monomial, int]:
        if isinstance(x, Sym):
            return dict(x.terms)
        return {(): _as_int(x)}

    def __add__(self, other):
        if not isinstance(other, (Sym, int)):
            return NotImplemented
        terms = self._terms(self)
        for m, c in self._terms(other).items():
            terms[m] = terms.get(m, 0) + c
        return _canon(terms)

    __radd__ = __add__

    def __neg__(self):
        return _canon({m: -c for m, c in self.terms})

    def __sub__(self, other):
        if not isinstance(other, (Sym, int)):
            return NotImplemented
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        if not isinstance(other, (Sym, int)):
            return NotImplemented
        terms: dict[Monomial, int] = {}
        for m1, c1 in self._terms(self).items():
            for m2, c2 in self._terms(other).items():
                m = tuple(sorted(m1 + m2))
                terms[m] = terms.get(m, 0) + c1 * c2
        return _canon(terms)

    __rmul__ = __mul__

    def __floordiv__(self, other):
        """Exact division only (by an int dividing every coefficient, or by a Sym dividing every term)."""
        q = exact_div(self, other)
        if q is None:
            raise SymbolicSizeError(f"{self} // {other} is not exact for every size")
        return q

    def __rfloordiv__(self, other):
        q = exact_div(other, self)
        if q is None:
            raise SymbolicSizeError(f"{other} // {self} depends on the size")
        return q

    def __mod__(self, other):
        if isinstance(other, int) and other and all(c % other == 0 for m, c in self.terms if m):
            return dict(self.terms).get((), 0) % other
        raise SymbolicSizeError(f"{self} % {other} depends on the size")

    # ---- questions -------------------------------------------------------------------------
    def __eq__(self, other):
        return isinstance(other, Sym) and self.terms == other.terms

    def __hash__(self):
        return hash(self.terms)

    def bounds(self) -> tuple[float, float]:
        """(least, greatest) value over the symbols' ranges (size_ranges; else [1, inf)): each monomial
        grows with every symbol, so its extremes are at the range ends."""
        ranges = _RANGES.get()
        lo = hi = 0
        for m, c in self.terms:
            at_lo = math.prod(ranges.get(s, (1, math.inf))[0] for s in m)
            at_hi = math.prod(ranges.get(s, (1, math.inf))[1] for s in m)
            lo += c * (at_lo if c > 0 else at_hi)
            hi += c * (at_hi if c > 0 else at_lo)
        return lo, hi

    def _compare(self, other, op: str) -> bool:
        diff = self - other
        if not isinstance(diff, Sym):
            return {"<": diff < 0, "<=": diff <= 0, ">": diff > 0, ">=": diff >= 0}[op]
        lo, hi = diff.bounds()
        holds = {"<": hi < 0, "<=": hi <= 0, ">": lo > 0, ">=": lo >= 0}[op]
        fails = {"<": lo >= 0, "<=": lo > 0, ">": hi <= 0, ">=": hi < 0}[op]
        if holds or fails:
            return holds
        raise SymbolicSizeError(f"whether {self} {op} {other} depends on the size")

    def __lt__(self, other):
        return self._compare(other, "<")

    def __le__(self, other):
        return self._compare(other, "<=")

    def __gt__(self, other):
        return self._compare(other, ">")

    def __ge__(self, other):
        return self._compare(other, ">=")

    def __bool__(self):
        return self._compare(0, ">")    # True when nonzero for every size, else it depends

    def __int__(self):
        raise SymbolicSizeError(f"{self} is a dynamic size where a fixed one is needed")

    __index__ = __float__ = __int__

    def __truediv__(self, other):
        raise SymbolicSizeError(f"{self} / {other}: a ratio of sizes is not a size (a dynamic one here)")

    def __rtruediv__(self, other):
        raise SymbolicSizeError(f"{other} / {self}: a ratio of sizes is not a size (a dynamic one here)")

    # ---- evaluation and text ---------------------------------------------------------------
    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(s for m, _ in self.terms for s in m)

    def evaluate(self, env: Mapping[str, int]) -> int:
        total = 0
        for m, c in self.terms:
            for s in m:
                c *= env[s]
            total += c
        return total

    def __str__(self):
        if len(self.terms) == 1 and self.terms[0][1] == 1 and len(self.terms[0][0]) == 1:
            return self.terms[0][0][0]
        parts = []
        for m, c in sorted(self.terms, key=lambda t: (-len(t[0]), t[0])):
            body = "*".join(m)
            text = str(abs(c)) if not m else body if abs(c) == 1 else f"{abs(c)}*{body}"
            parts.append(("-" if c < 0 else "+") + text)
        s = "".join(p if i or p[0] == "-" else p[1:] for i, p in enumerate(parts))
        return f"({s.replace('+', ' + ').replace('-', ' - ').strip()})".replace("( - ", "(-")

    __repr__ = __str__


Size = Union[int, Sym]


def format_size(x: Size) -> str:
    """The IR text of a size: `768`, `?(S)`, `?(12*S + 4)`."""
    return f"?({str(x).strip('()')})" if isinstance(x, Sym) else str(x)


def _as_int(x) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"a size is an int or a Sym, got {x!r}")
    return x


def _canon(terms: dict[Monomial, int]) -> Size:
    s = Sym(terms)
    if not s.terms:
        return 0
    if len(s.terms) == 1 and s.terms[0][0] == ():
        return s.terms[0][1]
    return s


def exact_div(a: Size, b: Size) -> Size | None:
    """a / b when it is the same polynomial for every size, else None."""
    if isinstance(b, int):
        if b == 0:
            return None
        if isinstance(a, int):
            return a // b if a % b == 0 else None
        if all(c % b == 0 for _, c in a.terms):
            return _canon({m: c // b for m, c in a.terms})
        return None
    if len(b.terms) != 1:
        return 1 if a == b else None
    (bm, bc), = b.terms
    if isinstance(a, int):
        return None
    out: dict[Monomial, int] = {}
    for m, c in a.terms:
        rest = list(m)
        for s in bm:
            if s not in rest:
                return None
            rest.remove(s)
        if c % bc:
            return None
        out[tuple(rest)] = c // bc
    return _canon(out)


def as_size(x) -> Size:
    """x as a size: a Sym stays, anything int-like becomes an int."""
    return x if isinstance(x, Sym) else int(x)


def is_static(x) -> bool:
    """True for an int size, or a shape/tuple of int sizes."""
    if isinstance(x, (list, tuple)):
        return all(is_static(d) for d in x)
    return not isinstance(x, Sym)


def _map_sizes(x, fn):
    """x (a size, or nested lists/tuples/dicts of sizes) with fn applied to each Sym in it."""
    if isinstance(x, Sym):
        return fn(x)
    if isinstance(x, tuple):
        return tuple(_map_sizes(v, fn) for v in x)
    if isinstance(x, list):
        return [_map_sizes(v, fn) for v in x]
    if isinstance(x, dict):
        return {k: _map_sizes(v, fn) for k, v in x.items()}
    return x


def evaluate(x, env: Mapping[str, int]):
    """x (a size, or nested lists/tuples/dicts of sizes) with every symbol bound."""
    return _map_sizes(x, lambda s: s.evaluate(env))


def substitute(x, env: Mapping[str, "int | Sym"]):
    """x (as for evaluate) with the symbols in env replaced by their values (ints or sizes); the
    others stay."""
    def one(s: Sym):
        total = 0
        for m, c in s.terms:
            for name in m:
                c = c * (env[name] if name in env else Sym.symbol(name))
            total = total + c
        return total
    return _map_sizes(x, one)


def at_largest(x):
    """x with every symbol at the top of its range (size_ranges): what the arena is planned for."""
    ranges = _RANGES.get()
    missing = symbols_of(x) - set(ranges)
    if missing:
        raise SymbolicSizeError(f"dynamic size(s) {sorted(missing)} have no declared range")
    return evaluate(x, {k: hi for k, (lo, hi) in ranges.items()})


def symbols_of(x) -> frozenset[str]:
    if isinstance(x, Sym):
        return x.symbols
    if isinstance(x, (list, tuple)):
        return frozenset().union(*(symbols_of(v) for v in x)) if x else frozenset()
    if isinstance(x, dict):
        return symbols_of(list(x.values()))
    return frozenset()


_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(.))")


def parse_size(text: str) -> Size:
    """'768' -> 768, 'S' -> Sym S, '(12*S + 4)' -> that polynomial (+, -, * over ints and names)."""
    tokens = [(n, s, o) for n, s, o in _TOKEN.findall(text) if n or s or o.strip()]
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else ("", "", "")

    def atom():
        nonlocal pos
        n, s, o = peek()
        pos += 1
        if n:
            return int(n)
        if s:
            return Sym.symbol(s)
        if o == "(":
            v = expr()
            if peek()[2] != ")":
                raise ValueError(f"unbalanced size {text!r}")
            pos += 1
            return v
        if o == "-":
            return -atom()
        raise ValueError(f"bad size {text!r}")

    def term():
        nonlocal pos
        v = atom()
        while peek()[2] == "*":
            pos += 1
            v = v * atom()
        return v

    def expr():
        nonlocal pos
        v = term()
        while peek()[2] in ("+", "-"):
            sign = peek()[2]
            pos += 1
            v = v + term() if sign == "+" else v - term()
        return v

    v = expr()
    if pos != len(tokens):
        raise ValueError(f"bad size {text!r}")
    return v

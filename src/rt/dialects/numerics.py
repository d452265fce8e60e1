"""Numpy reference numerics shared by the dialects' reference implementations (float32 in, float32 out)."""
from __future__ import annotations

import math

import numpy as np

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gather_rows(table: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """table[idx] for indices in [0, rows) (numpy would wrap negative ones); any other raises
    IndexOutOfRangeError naming the first, as the C kernel does."""
    from ..errors import IndexOutOfRangeError
    bad = (idx < 0) | (idx >= table.shape[0])
    if bad.any():
        raise IndexOutOfRangeError(f"index {int(idx[bad].flat[0])} outside [0, {table.shape[0]}) for an "
                                   f"embedding table of {table.shape[0]} rows")
    return table[idx]


def erf(x: np.ndarray) -> np.ndarray:
    """erf without scipy: Abramowitz & Stegun 7.1.26 evaluated in float64 (|error| < 1.5e-7)."""
    x64 = np.asarray(x, dtype=np.float64)
    s = np.sign(x64)
    a = np.abs(x64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (s * (1.0 - poly * np.exp(-a * a))).astype(np.asarray(x).dtype)


def gelu_erf(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))).astype(x.dtype)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x64 + 0.044715 * x64 ** 3)))).astype(x.dtype)


def sigmoid(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return (1.0 / (1.0 + np.exp(-x64))).astype(x.dtype)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.zeros((), x.dtype))


ACTIVATIONS = {
    "none": lambda x: x,
    "relu": relu,
    "gelu_tanh": gelu_tanh,
    "gelu_erf": gelu_erf,
    "silu": lambda x: (x.astype(np.float64) * sigmoid(x.astype(np.float64))).astype(x.dtype),
}


def layer_norm(x: np.ndarray, gamma, beta, eps: float, n_axes: int = 1) -> np.ndarray:
    """Normalise over the last n_axes dims (biased variance, like torch), in float64, rounded once."""
    axes = tuple(range(x.ndim - n_axes, x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x64 - mean) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y.astype(x.dtype)


def _lgamma(v: float) -> float:
    try:
        return math.lgamma(v)
    except (ValueError, OverflowError):      # the poles: inf, as torch
        return math.inf if not math.isnan(v) else v


def _softplus(x, beta, threshold):
    with np.errstate(over="ignore"):
        return np.where(x * beta > threshold, x, np.log1p(np.exp(x * beta)) / beta)


# The unary ops' references, float64 in and out, by name (rt.abi.UNARY_OPS), each taking the op's
# parameter attributes (fused_ops.UNARY_PARAMS) as keywords.
UNARY = {
    "relu": lambda x: relu(x),
    "gelu_tanh": lambda x: gelu_tanh(x),
    "gelu_erf": lambda x: gelu_erf(x),
    "tanh": np.tanh,
    "sigmoid": lambda x: sigmoid(x),
    "neg": np.negative,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "silu": lambda x: x * sigmoid(x),
    "sin": np.sin,
    "cos": np.cos,
    "erf": lambda x: erf(x),
    "abs": np.abs,
    "log": np.log,
    "log1p": np.log1p,
    "expm1": np.expm1,
    "reciprocal": lambda x: 1.0 / x,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.rint,
    "trunc": np.trunc,
    "sign": lambda x: np.where(np.isnan(x), x, np.sign(x)),
    "hardswish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hardsigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "mish": lambda x: x * np.tanh(_softplus(x, 1.0, 20.0)),
    "softplus": lambda x, beta, threshold: _softplus(x, beta, threshold),
    "elu": lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0))),
    "leaky_relu": lambda x, negative_slope: np.where(x > 0, x, negative_slope * x),
    "clamp": lambda x, min, max: np.where(x < min, min, np.where(x > max, max, x)),
    "pow": lambda x, exponent: np.power(x, exponent),
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "asinh": np.arcsinh,
    "acosh": np.arccosh,
    "atanh": np.arctanh,
    "exp2": np.exp2,
    "log2": np.log2,
    "log10": np.log10,
    "erfc": lambda x: np.vectorize(math.erfc, otypes=[np.float64])(x),
    "log_sigmoid": lambda x: -np.logaddexp(0.0, -x),
    "frac": lambda x: x - np.trunc(x),
    "lgamma": lambda x: np.vectorize(_lgamma, otypes=[np.float64])(x),
}

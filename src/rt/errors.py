"""Every error rt raises, in one place. Messages say what went wrong and what the user can do.
Everything that leaves rt's public API or the `rt` command is an RtError; anything else is a bug in rt."""
from __future__ import annotations

import importlib
import importlib.util


class RtError(Exception):
    """Base class of every rt error."""


class IRParseError(RtError, ValueError):
    """IR text that does not parse."""


class VerificationError(RtError):
    """IR that breaks a dialect's rules (names the op)."""


class ExportError(RtError):
    """torch.export could not capture the model."""


class UnsupportedOpError(RtError):
    """The model uses ATen ops rt has no converter for; lists each with its source location."""

    def __init__(self, unsupported: list[tuple[str, str, str]]):
        # (aten overload, where in the model, hint)
        self.unsupported = unsupported
        lines = [f"rt cannot compile this model: {len(unsupported)} unsupported ATen op(s):"]
        for target, where, hint in unsupported:
            lines.append(f"  - {target} at {where}" + (f" ({hint})" if hint else ""))
        lines.append("Rewrite these parts of the model with supported ops, or file an issue with the list above.")
        super().__init__("\n".join(lines))


class InputError(RtError, ValueError):
    """A call got the wrong number, shape or dtype of inputs."""


class ModelFileError(RtError):
    """A model file (rt's, or a .pt2 for `rt compile`) unreadable, truncated, corrupt, foreign or newer: names what."""


class LoweringError(RtError):
    """A lowering step met IR it cannot handle."""


class KernelError(RtError, RuntimeError):
    """A kernel failed at run time (names the op)."""


class IndexOutOfRangeError(KernelError, IndexError):
    """An index (e.g. a token id) out of range at run time: names the input and the index."""


class ProgramError(RtError, ValueError):
    """An op-record program the runtime's checker refuses (names the op and what is wrong)."""


class SaveError(RtError, OSError):
    """Writing a file failed (names the path and the OS's reason); the destination is left as it was."""


class MissingDependencyError(RtError, ImportError):
    """A feature needs an optional package that is not installed; says which `pip install` fixes it."""


class UsageError(RtError, ValueError):
    """A public function or the `rt` command got an argument it cannot use."""


# what `pip install` needs for an optional package whose version rt pins (pyproject.toml's extras)
_PIP_SPECS = {"torch": "torch==2.13.0", "transformers": "'transformers>=5,<6'", "ray": "'ray[serve]==2.60.0'"}


def require(module: str, feature: str, load: bool = True):
    """Import the optional package `module` for `feature` (e.g. "rt.compile"), or raise
    MissingDependencyError saying which `pip install` provides it. load=False only checks that it is
    installed, for a process that leaves the importing to its workers."""
    top = module.split(".")[0]
    try:
        if load:
            return importlib.import_module(module)
        if importlib.util.find_spec(top) is None:
            raise ImportError(f"No module named {top!r}")
    except ImportError as e:
        raise MissingDependencyError(f"{feature} needs {top}, which cannot be imported ({e}): "
                                     f"pip install {_PIP_SPECS.get(top, top)}") from None

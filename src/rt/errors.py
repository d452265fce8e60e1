"""Every error rt raises, in one place. Messages say what went wrong and what the user can do."""
from __future__ import annotations


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
    """A saved model file that is truncated, corrupt, foreign or from a newer rt."""


class LoweringError(RtError):
    """A lowering step met IR it cannot handle."""

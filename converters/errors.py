"""Errors raised by the converters. The coordinator's conversion worker catches
:class:`ConversionError` and shows its message to the user, so messages name the cause
(node name and op type where there is one) in one line."""

from __future__ import annotations


class ConversionError(Exception):
    """Base class: the model could not be analysed or converted."""


class MalformedModelError(ConversionError):
    """The file is not a valid ONNX model (unparsable, fails the checker, bad shapes)."""


class UnsupportedModelError(ConversionError):
    """A valid ONNX model that uses something the target cannot represent."""

    def __init__(self, message: str, node: str | None = None, op: str | None = None) -> None:
        self.node = node
        self.op = op
        if node is not None or op is not None:
            message = f"node {node!r} ({op}): {message}"
        super().__init__(message)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (messages to the user are one line)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

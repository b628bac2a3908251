"""daBNN back end: IR → ``.dab`` (daBNN's FlatBuffers format, schema ``dab.fbs``), a reader,
the runtime's rules, and a numpy reference of what daBNN computes. See docs/dabnn.md.

lower.py maps the IR to daBNN layers (model.py), writer.py/reader.py serialise them (schema.py,
bits.py), check.py holds daBNN's runtime rules, convert.py writes the checked file,
reference.py runs a ``.dab`` in numpy and verify.py checks it through the fidelity harness."""

from __future__ import annotations

from converters.backends.dabnn.check import check_model
from converters.backends.dabnn.convert import convert_dabnn
from converters.backends.dabnn.lower import CONVERTER_NAME, CONVERTER_VERSION, Lowered, lower
from converters.backends.dabnn.model import DabFormatError, DabModel
from converters.backends.dabnn.reader import loads, read_dab
from converters.backends.dabnn.reference import execute, run_dab
from converters.backends.dabnn.verify import verify_dabnn
from converters.backends.dabnn.writer import dumps

__all__ = [
    "CONVERTER_NAME",
    "CONVERTER_VERSION",
    "DabFormatError",
    "DabModel",
    "Lowered",
    "check_model",
    "convert_dabnn",
    "dumps",
    "execute",
    "loads",
    "lower",
    "read_dab",
    "run_dab",
    "verify_dabnn",
]

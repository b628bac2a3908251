"""Native back end: IR → ``.bnn`` (native/FORMAT.md; convert.py), verified with the C engine
(or the numpy reference where it cannot be built) against onnxruntime (verify.py)."""

from converters.backends.native.convert import (
    CONVERTER_NAME,
    CONVERTER_VERSION,
    execution_order,
    to_native_model,
    write_native,
)
from converters.backends.native.verify import verify_native

__all__ = [
    "CONVERTER_NAME",
    "CONVERTER_VERSION",
    "execution_order",
    "to_native_model",
    "verify_native",
    "write_native",
]

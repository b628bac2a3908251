"""Larq Compute Engine back end: IR → tf-keras model (keras.py, binary-conv padding planned in
padding.py) → LCE's converter → ``.tflite`` (convert.py), verified in LCE's interpreter
(verify.py). TensorFlow is imported only when a model is converted or verified."""

from converters.backends.lce.convert import check_bconv_count, convert_lce
from converters.backends.lce.verify import verify_lce

__all__ = ["check_bconv_count", "convert_lce", "verify_lce"]

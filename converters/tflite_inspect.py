"""The TFLite flatbuffer reader under its old import path, kept for agent/runners/lce.py
(outside converters/). New code imports :mod:`converters.backends.tflite.flatbuffer`."""

from converters.backends.tflite.flatbuffer import inspect_tflite

__all__ = ["inspect_tflite"]

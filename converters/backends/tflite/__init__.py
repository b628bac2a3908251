"""Plain TFLite back end (FP32 models, for tflite-runtime): converted with the LCE back end's
toolchain (convert.py) and verified like an LCE artifact (verify.py). ``flatbuffer.py`` reads
any ``.tflite`` without TensorFlow (the agent uses it), so this package imports nothing."""

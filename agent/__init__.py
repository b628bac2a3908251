"""The bnnbench agent: registers a device, leases benchmark jobs, runs them, reports results.

Kept light on purpose (it runs on small boards): nothing under ``agent/`` imports FastAPI,
SQLAlchemy, onnx, onnxruntime or TensorFlow.
"""

__version__ = "0.1.0"

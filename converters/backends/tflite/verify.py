"""A plain TFLite artifact is verified as an LCE one: LCE's interpreter runs builtin ops too."""

from converters.backends.lce.verify import verify

__all__ = ["verify"]

"""Transports: where a runner's work happens (see base.Transport)."""

from agent.transports.base import Transport
from agent.transports.local import LocalTransport

__all__ = ["LocalTransport", "Transport"]

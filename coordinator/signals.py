"""Wake-ups across the server: "a job became leasable", "there is conversion work".

``notify()`` may be called from any thread (request handlers run in a thread pool); waiters
live on the event loop. A waiter takes ``token()`` *before* looking at the database and waits
on it afterwards, so a notification in between is never missed.
"""

from __future__ import annotations

import asyncio
import contextlib


class Signal:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def token(self) -> asyncio.Event:
        return self._event

    def _fire(self) -> None:
        ev, self._event = self._event, asyncio.Event()
        ev.set()

    def notify(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fire()
        else:
            with contextlib.suppress(RuntimeError):  # loop shutting down
                loop.call_soon_threadsafe(self._fire)

    @staticmethod
    async def wait(token: asyncio.Event, timeout: float) -> bool:
        """True if notified within ``timeout`` seconds."""
        if timeout <= 0:
            return token.is_set()
        try:
            await asyncio.wait_for(token.wait(), timeout)
            return True
        except TimeoutError:
            return False

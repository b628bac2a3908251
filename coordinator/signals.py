"""Wake-ups across the server: "a job became leasable", "there is conversion work".

``notify()`` may be called from any thread (request handlers run in a thread pool); waiters
live on the event loop. A waiter takes ``token()`` *before* looking at the database and waits
on it afterwards, so a notification in between is never missed.

On PostgreSQL a :class:`PgSignalBus` carries each ``notify()`` to every coordinator on the same
database (``NOTIFY``; each listens on a dedicated connection in a background thread and
reconnects when the server restarts), so a job submitted on one coordinator wakes the long
polls waiting on another at once. On SQLite signals stay within the process: other
processes' work is seen at the waiters' periodic re-checks (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("bnnbench.coordinator.signals")


class Signal:
    def __init__(self, channel: str = "") -> None:
        self.channel = channel  # the NOTIFY channel across coordinators ("": this process only)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        self._bus: PgSignalBus | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def attach(self, bus: PgSignalBus | None) -> None:
        """Send later notifications to the other coordinators too (None: stop)."""
        self._bus = bus

    def token(self) -> asyncio.Event:
        return self._event

    def _fire(self) -> None:
        ev, self._event = self._event, asyncio.Event()
        ev.set()

    def fire_local(self) -> None:
        """Wake this process's waiters only (what a notification from another one does)."""
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

    def notify(self) -> None:
        self.fire_local()
        bus = self._bus
        if bus is not None and self.channel:
            bus.publish(self.channel)  # never blocks: a thread of the bus sends it

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


class PgSignalBus:
    """``Signal.notify()`` across the coordinators of one PostgreSQL database.

    A sender thread turns ``publish(channel)`` into ``SELECT pg_notify(channel, instance)``
    on a pooled connection (callers may be on the event loop: they never wait for the
    database; notifications queued while one is sent are coalesced). A listener thread holds
    its own autocommit connection with ``LISTEN`` on every channel and fires the local signal
    of each notification another instance sent (its own are skipped: ``notify()`` already
    fired them). When that connection breaks (the server restarted) it reconnects with
    backoff, and after reconnecting fires every signal once, since notifications sent while
    it was away are lost.
    """

    def __init__(
        self,
        engine: Engine,
        instance: str,
        signals: Iterable[Signal],
        *,
        ping_seconds: float = 10.0,
        max_backoff_seconds: float = 2.0,
    ) -> None:
        self.engine = engine
        self.instance = instance
        self.signals = {s.channel: s for s in signals if s.channel}
        self.ping_seconds = ping_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.listening = threading.Event()  # set while LISTEN is in place
        self.connects = 0  # LISTEN connections established so far (1 + reconnects)
        self._stop = threading.Event()
        self._pending: set[str] = set()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        for sig in self.signals.values():
            sig.attach(self)
        for target, name in ((self._listen, "pg-listen"), (self._send, "pg-notify")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def wait_listening(self, timeout: float) -> bool:
        return self.listening.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        for sig in self.signals.values():
            sig.attach(None)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)

    # -------------------------------------------------------------- sending

    def publish(self, channel: str) -> None:
        with self._cond:
            self._pending.add(channel)
            self._cond.notify()

    def _send(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                channels, self._pending = sorted(self._pending), set()
            try:
                with self.engine.connect() as conn:
                    for ch in channels:
                        conn.execute(
                            text("SELECT pg_notify(:ch, :me)"), {"ch": ch, "me": self.instance}
                        )
                    conn.commit()
            except Exception as exc:  # database unreachable: the listeners catch up on reconnect
                log.warning("NOTIFY %s not sent: %s", ", ".join(channels), exc)

    # -------------------------------------------------------------- listening

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg
        from psycopg import sql

        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        kwargs.pop("context", None)  # SQLAlchemy's adapters: not needed for LISTEN
        # a peer that vanished without closing the socket is noticed by the pings below;
        # keepalives make the kernel notice it too (TCP only)
        kwargs.setdefault("connect_timeout", 10)
        conn = psycopg.connect(*args, autocommit=True, **kwargs)
        try:
            for ch in self.signals:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ch)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _listen(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = self._connect()
                self.connects += 1
                self.listening.set()
                backoff = 0.2
                log.info(
                    "listening for %s on PostgreSQL (connection %d)",
                    ", ".join(self.signals),
                    self.connects,
                )
                if self.connects > 1:  # what was sent while we were away is lost: look again
                    for sig in self.signals.values():
                        sig.fire_local()
                self._receive(conn)
            except Exception as exc:
                if self._stop.is_set():
                    break
                if self.listening.is_set():
                    log.warning("notification connection lost (%s); reconnecting", exc)
                self.listening.clear()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
        self.listening.clear()

    def _receive(self, conn: psycopg.Connection[Any]) -> None:
        last_ping = time.monotonic()
        while not self._stop.is_set():
            for n in conn.notifies(timeout=1.0):
                sig = self.signals.get(n.channel)
                if sig is not None and n.payload != self.instance:
                    sig.fire_local()
            if time.monotonic() - last_ping > self.ping_seconds:
                conn.execute("SELECT 1")  # raises if the server went away silently
                last_ping = time.monotonic()

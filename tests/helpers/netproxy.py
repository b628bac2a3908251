"""A TCP proxy a test controls, standing for the network between an agent and the coordinator.

``cut()`` blackholes the path the way a pulled cable or a dead router does, not the way a
stopped server does: nothing is refused or closed, bytes in either direction are held (never
delivered, never answered), new connections complete the kernel's handshake but are not
served. ``restore()`` lets everything held through, as TCP's retransmissions would once the
path is back: a request sent during the cut arrives late, and a client that gave up on it
finds its connection answered or closed then. Threads, loopback only.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable
from types import TracebackType

_POLL_S = 0.05
_CHUNK = 65536


class TcpProxy:
    """Listens on 127.0.0.1 (``port``, ``url``) and forwards each connection to
    ``target_port``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)  # connections made during a cut wait here, unaccepted
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._flowing = threading.Event()
        self._flowing.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.connections = 0  # accepted so far
        self._spawn(self._accept_loop)

    # ---------------------------------------------------------------- control

    @property
    def is_cut(self) -> bool:
        return not self._flowing.is_set()

    def cut(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._stop.set()
        self._flowing.set()  # wake every waiter so it sees the stop
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- plumbing

    def _spawn(self, fn: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _wait_flowing(self) -> bool:
        """Block while cut; False once the proxy is closing."""
        while not self._flowing.wait(_POLL_S):
            if self._stop.is_set():
                return False
        return not self._stop.is_set()

    def _accept_loop(self) -> None:
        while self._wait_flowing():
            try:
                ready, _, _ = select.select([self._listener], [], [], _POLL_S)
            except (OSError, ValueError):
                return
            if not ready or not self._flowing.is_set():
                continue  # cut: the connection waits in the backlog
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:  # the coordinator is down: as it would look without a proxy
                client.close()
                continue
            upstream.settimeout(None)
            self.connections += 1
            with self._lock:
                self._socks.update((client, upstream))
            done = threading.Event()  # the first pump to fail closes both ends
            self._spawn(self._pump, client, upstream, done)
            self._spawn(self._pump, upstream, client, done)

    def _pump(self, src: socket.socket, dst: socket.socket, done: threading.Event) -> None:
        try:
            while self._wait_flowing():
                ready, _, _ = select.select([src], [], [], _POLL_S)
                if not ready or not self._flowing.is_set():
                    continue  # cut: leave the bytes in the kernel's buffers
                data = src.recv(_CHUNK)
                if not self._wait_flowing():  # cut while reading: hold them until restored
                    return
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)  # pass the half-close on
                    return
                dst.sendall(data)
        except (OSError, ValueError):  # reset by a peer, or closed by close()
            done.set()
        finally:
            if done.is_set() or self._stop.is_set():
                self._close_pair(src, dst)
            else:
                done.set()

    def _close_pair(self, *socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
            with self._lock:
                self._socks.discard(s)

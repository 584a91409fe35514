"""A small TCP proxy in front of PostgreSQL that can lose a commit's answer, for fault-injection tests.

It forwards bytes both ways unchanged and reads the client's side as PostgreSQL's wire protocol (the untyped
start-up messages, then typed messages). When armed with a pattern, the first transaction whose statements
match it is let through up to its ``COMMIT``: the proxy forwards the ``COMMIT`` to the server, waits for the
server's answer (so the server has committed), and closes both sockets instead of passing the answer on. The
client sees a lost connection for a write that did land, as a database restart or a network cut can do.

psycopg2 sends every statement as a simple ``Query`` message with its parameters inlined, so a pattern such
as ``rb"INSERT INTO trials \\("`` finds the statement. Use a URL with ``sslmode=disable``: the proxy does not
read TLS.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
from types import TracebackType

_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104
_END = re.compile(rb"^\s*(COMMIT|ROLLBACK)\b", re.IGNORECASE)


class _Link:
    """One client connection and its server connection."""

    def __init__(self, proxy: CommitDropProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = socket.create_connection(proxy.upstream)
        self.matched = False  # the open transaction ran a statement matching the armed pattern
        self.dropping = threading.Event()  # a COMMIT to lose was forwarded: the next answer closes the link
        self.closed = False
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._client_to_server, daemon=True).start()
        threading.Thread(target=self._server_to_client, daemon=True).start()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _recv_exact(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                chunk = self.client.recv(n - len(data))
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def _client_to_server(self) -> None:
        try:
            self._pump_client()
        finally:
            self.close()

    def _pump_client(self) -> None:
        started = False
        while True:
            if not started:  # start-up phase: untyped messages (SSL/GSS request, then the start-up message)
                head = self._recv_exact(8)
                if head is None:
                    return
                length, code = struct.unpack("!ii", head)
                rest = self._recv_exact(length - 8)
                if rest is None:
                    return
                started = code not in (_SSL_REQUEST, _GSS_REQUEST)
                self.server.sendall(head + rest)
                continue
            head = self._recv_exact(5)
            if head is None:
                return
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            body = self._recv_exact(length - 4)
            if body is None:
                return
            if kind == b"Q":
                self._on_query(body.rstrip(b"\0"))
            self.server.sendall(head + body)

    def _on_query(self, sql: bytes) -> None:
        pattern = self.proxy.armed
        if pattern is not None and re.search(pattern, sql):
            self.matched = True
        end = _END.match(sql)
        if end is None:
            return
        if self.matched and end.group(1).upper() == b"COMMIT" and self.proxy.take_arm():
            self.dropping.set()  # set before the COMMIT is forwarded: its answer is the next thing back
        self.matched = False

    def _server_to_client(self) -> None:
        try:
            while True:
                try:
                    data = self.server.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if self.dropping.is_set():  # the server answered the COMMIT: it committed; lose the answer
                    self.proxy.dropped += 1
                    return
                try:
                    self.client.sendall(data)
                except OSError:
                    return
        finally:
            self.close()


class CommitDropProxy:
    """``with CommitDropProxy(("127.0.0.1", 5432)) as proxy:`` listens on ``proxy.port`` (loopback).
    ``proxy.arm(pattern)`` loses the answer of the next commit of a transaction that ran a statement
    matching ``pattern`` (a bytes regex), once; ``proxy.dropped`` counts the answers lost."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.armed: bytes | None = None
        self.dropped = 0
        self._arm_lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._links: list[_Link] = []
        self._stopped = False

    def arm(self, pattern: bytes) -> None:
        with self._arm_lock:
            self.armed = pattern

    def take_arm(self) -> bool:
        """Disarm; True if this call did (so exactly one commit is lost per ``arm``)."""
        with self._arm_lock:
            was, self.armed = self.armed, None
            return was is not None

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                link = _Link(self, client)
            except OSError:
                client.close()
                continue
            self._links.append(link)
            link.start()

    def __enter__(self) -> CommitDropProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopped = True
        self._listener.close()
        for link in self._links:
            link.close()

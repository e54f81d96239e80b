"""A loopback TCP proxy in front of a real server (PostgreSQL, an SMTP relay), with the faults an
operator meets on the way to it: the port refusing connections with live ones cut, and a peer
that accepts and then never says a word."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.sink import free_port


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode = "forward"  # forward | hang
        self.accepted = 0
        self._lock = threading.Lock()
        self._live: list[socket.socket] = []  # both ends of every connection, to cut them
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def refuse(self) -> None:
        """The port closed (connection refused) and every live connection cut."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self.cut()

    def restore(self) -> None:
        """Forwarding again; connections held silent by `hang` are closed."""
        self.mode = "forward"
        self.cut()
        if self._listener is None:
            self.start()

    def hang(self) -> None:
        """New connections are accepted and never answered (live ones keep working)."""
        self.mode = "hang"

    def cut(self) -> None:
        with self._lock:
            live, self._live = self._live, []
        for s in live:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    stop = refuse

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            with self._lock:
                self._live.append(client)
            if self.mode == "hang":
                continue  # held open, never read, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._live.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

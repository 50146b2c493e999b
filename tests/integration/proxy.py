"""Proxies in front of the real servers.

``TcpProxy``, for chaos tests, forwards a local port to a server until told to cut the link:
``cut()`` drops every open connection and refuses new ones (as a dead broker or S3 endpoint
would look to a client); ``restore()`` lets connections through again. ``TlsTerminator``
puts TLS in front of a plaintext server (the embedded broker's own TLS listener is not usable).
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import socket
import ssl
import threading

from streams import embedded


class TcpProxy:
    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or embedded.free_port()
        self._listener = socket.create_server((embedded.LOOPBACK, self.port), reuse_port=False)
        self._listener.setblocking(False)
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._drop_all()
        self._listener.close()

    def cut(self) -> None:
        self._cut.set()
        self._drop_all()

    def restore(self) -> None:
        self._cut.clear()

    def _drop_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.close()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        while not self._stop.is_set():
            with self._lock:
                pairs = list(self._pairs)
            for a, b in pairs:
                for sock, peer in ((a, b), (b, a)):
                    if sock.fileno() >= 0 and peer.fileno() >= 0:
                        with contextlib.suppress(KeyError, ValueError):
                            sel.register(sock, selectors.EVENT_READ, peer)
            events = sel.select(timeout=0.1)
            for key, _ in events:
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._pump(key.fileobj, key.data)  # type: ignore[arg-type]
            for key in list(sel.get_map().values()):
                if key.fileobj is not self._listener:
                    with contextlib.suppress(KeyError, ValueError):
                        sel.unregister(key.fileobj)
        sel.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        if self._cut.is_set():
            client.close()  # the far side is "down"
            return
        try:
            upstream = socket.create_connection((embedded.LOOPBACK, self.target_port), 5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._pairs.append((client, upstream))

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            data = source.recv(65536)
            if data:
                sink.sendall(data)
                return
        except OSError:
            pass
        for sock in (source, sink):  # one side closed: close both
            with contextlib.suppress(OSError):
                sock.close()
        with self._lock:
            self._pairs = [p for p in self._pairs if source not in p]


class TlsTerminator:
    """A TLS front for a plaintext server, as a managed broker's TLS listener looks to a
    client: it speaks TLS with ``context`` on its own port and forwards the plain bytes."""

    def __init__(self, target_port: int, context: ssl.SSLContext) -> None:
        self.target_port = target_port
        self.port = embedded.free_port()
        self.context = context
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-front",
                                        daemon=True)

    def __enter__(self) -> TlsTerminator:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(asyncio.start_server(
            self._serve, embedded.LOOPBACK, self.port, ssl=self.context,
            ssl_handshake_timeout=5), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        server = self._server

        async def close() -> None:
            if server is not None:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(embedded.LOOPBACK,
                                                                 self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

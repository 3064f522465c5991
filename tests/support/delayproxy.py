"""A loopback TCP proxy that holds replies a known time: an instrument for the client's figures.

Bytes from the client go to the server at once; bytes from the server are
held ``delay`` seconds from when the proxy read them, in order.  With
``stall_after``/``stall_for`` the proxy also holds everything the server
sends between ``stall_after`` and ``stall_after + stall_for`` seconds (counted
from the first byte any client sent) until that window ends: one server stall
of a known length.  It runs an asyncio loop in a daemon thread, independent of
the Twisted code it measures.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class DelayProxy:
    """Listen on 127.0.0.1:0 and forward to ``upstream``, holding the replies."""

    def __init__(
        self,
        upstream: tuple[str, int],
        delay: float = 0.0,
        stall_after: float | None = None,
        stall_for: float = 0.0,
    ) -> None:
        self.upstream = upstream
        self.delay = delay
        self.stall_after = stall_after
        self.stall_for = stall_for
        self.port = 0
        self.first_byte: float | None = None  # loop time of the first client byte
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None

    # -- lifetime -----------------------------------------------------------------

    def start(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("proxy did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    # -- forwarding ---------------------------------------------------------------

    def release_time(self, arrival: float) -> float:
        """When bytes the server sent at ``arrival`` (loop time) go to the client."""
        release = arrival + self.delay
        if self.stall_after is not None and self.first_byte is not None:
            start = self.first_byte + self.stall_after
            end = start + self.stall_for
            if start <= arrival < end:
                release = max(release, end)
        return release

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        for writer in (client_w, server_w):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        await asyncio.gather(
            self._upstream(client_r, server_w),
            self._hold(server_r, held),
            self._release(held, client_w),
            return_exceptions=True,
        )

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.first_byte is None:
                self.first_byte = self._loop.time()
            writer.write(data)
        if writer.can_write_eof():
            writer.write_eof()

    async def _hold(
        self, reader: asyncio.StreamReader, held: asyncio.Queue[tuple[float, bytes]]
    ) -> None:
        while data := await reader.read(65536):
            held.put_nowait((self.release_time(self._loop.time()), data))
        held.put_nowait((0.0, b""))

    async def _release(
        self, held: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            release, data = await held.get()
            if not data:
                writer.close()
                return
            wait = release - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()


@contextmanager
def delay_proxy(upstream: tuple[str, int], **options: float | None) -> Iterator[DelayProxy]:
    """A started :class:`DelayProxy`, stopped afterwards."""
    proxy = DelayProxy(upstream, **options).start()  # type: ignore[arg-type]
    try:
        yield proxy
    finally:
        proxy.stop()

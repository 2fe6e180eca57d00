"""A TCP proxy in front of Redis that, when told, lets Redis run the next
command, withholds its reply and closes the client's connection: the
connection lost after the server did the work, which a client's retry then
replays."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class DroppingProxy:
    def __init__(self, redis_url: str) -> None:
        target = urlsplit(redis_url)
        self._target = (target.hostname or "127.0.0.1", target.port or 6379)
        self._path = target.path  # the database number
        self._server: asyncio.Server | None = None
        self._drop = False
        self._open: set[asyncio.StreamWriter] = set()
        self.connections = 0  # accepted so far
        self.dropped = 0  # replies withheld

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{self._path}"

    def drop_next_reply(self) -> None:
        self._drop = True

    async def __aenter__(self) -> DroppingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):
            writer.close()
        await self._server.wait_closed()

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        server_in, server_out = await asyncio.open_connection(*self._target)
        self._open |= {client_out, server_out}
        upward = asyncio.create_task(self._pipe(client_in, server_out))
        try:
            while data := await server_in.read(65536):
                if self._drop:  # Redis has run it and answered: lose the answer
                    self._drop = False
                    self.dropped += 1
                    break
                client_out.write(data)
                await client_out.drain()
        finally:
            upward.cancel()
            for writer in (client_out, server_out):
                writer.close()
                self._open.discard(writer)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        sink.close()

"""REFERENCE PEER for the bench, not part of chatlog: an asyncio-streams reply server.

The idiomatic streams shape (``readline`` / ``write`` / ``drain``), no log.
With ``--uvloop`` the same code runs on uvloop's event loop.

    python -m chatlog.bench.peers.asyncio_reply [--uvloop] [PORT]
"""

from __future__ import annotations

import asyncio
import sys

PREFIX = b"Server received: "


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line.endswith(b"\n"):
                break  # EOF (a last unterminated line is dropped, as readline gives it)
            if line[-2:-1] == b"\r":
                line = line[:-2] + b"\n"
            writer.write(PREFIX + line)
            await writer.drain()
    except (ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096, limit=65536)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    args = sys.argv[1:]
    use_uvloop = "--uvloop" in args
    args = [a for a in args if a != "--uvloop"]
    port = int(args[0]) if args else 0
    if use_uvloop:
        import uvloop

        uvloop.run(serve(port))
    else:
        asyncio.run(serve(port))


if __name__ == "__main__":
    main()

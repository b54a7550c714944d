"""A TCP proxy that delays every byte by a set time each way: a database a network away.

Run: python -m bench._latencyproxy LISTEN_PORT TARGET_PORT DELAY_MS (127.0.0.1 both sides). Prints
"ready" once listening. Order is kept per direction; each chunk is forwarded DELAY_MS after it was
read, so a round trip costs 2 x DELAY_MS more, whatever else is in flight (a pipeline's several
statements in one chunk pay it once).
"""

from __future__ import annotations

import asyncio
import sys


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def read() -> None:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((None, b""))

    async def write() -> None:
        while True:
            due, data = await queue.get()
            if due is None:
                writer.close()
                return
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(read(), write())
    except (ConnectionError, OSError):
        writer.close()


async def main(listen: int, target: int, delay: float) -> None:
    async def session(client_r, client_w):
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(_forward(client_r, server_w, delay), _forward(server_r, client_w, delay))

    server = await asyncio.start_server(session, "127.0.0.1", listen)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000))

"""The serving path's lean Redis client (online/redis_async.py) under concurrency: commands of
concurrent callers pipelined on its one connection, every caller getting its own replies, in
order, against a real Redis."""

from __future__ import annotations

import asyncio

from featurestore.online.redis_async import AsyncRedis


def test_concurrent_callers_get_their_own_replies(redis_url: str) -> None:
    async def run() -> None:
        client = AsyncRedis(redis_url)
        await client.execute("DEL", *[f"t_async:{i}" for i in range(300)], timeout=5)
        await asyncio.gather(*(client.execute("SET", f"t_async:{i}", str(i), timeout=5)
                               for i in range(300)))

        async def one(i: int) -> None:  # batches of 1 to 3 commands, interleaved
            commands = [("GET", f"t_async:{i}"), ("MGET", f"t_async:{i}", "t_async:none"),
                        ("STRLEN", f"t_async:{i}")][:1 + i % 3]
            replies = await client.execute_many(commands, timeout=5)
            assert replies == [str(i).encode(), [str(i).encode(), None],
                               len(str(i))][:len(commands)]
        await asyncio.gather(*(one(i) for i in range(300)))
        client.reset()
    asyncio.run(run())

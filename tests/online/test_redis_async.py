"""The serving path's lean Redis client (online/redis_async.py) under concurrency: commands
sent while others await their replies share writes, and every caller still gets its own
replies, in order, against a real Redis."""

from __future__ import annotations

import asyncio

import redis

from featurestore.online.redis_async import AsyncRedis


def _reads_processed(client: redis.Redis) -> int:
    return int(client.info("stats")["total_reads_processed"])


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


def test_commands_in_flight_share_one_write(redis_url: str) -> None:
    """200 concurrent GETs reach Redis as two writes (the first at once, the rest together
    once they are all queued), so Redis reads them in a few read events, not ~200."""
    observer = redis.Redis.from_url(redis_url)

    async def run() -> int:
        client = AsyncRedis(redis_url)
        await client.execute("PING", timeout=5)  # connected before counting
        before = _reads_processed(observer)
        replies = await asyncio.gather(*(client.execute("GET", "t_async:absent", timeout=5)
                                         for _ in range(200)))
        assert replies == [None] * 200
        reads = _reads_processed(observer) - before
        client.reset()
        return reads
    try:
        reads = asyncio.run(run())
    finally:
        observer.close()
    assert reads <= 6, f"Redis processed {reads} reads for 200 concurrent commands"

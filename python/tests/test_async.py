"""unicache.AsyncCache: the same methods as coroutines."""

import asyncio
import time

import pytest

import unicache


@pytest.mark.asyncio
async def test_async_methods(cache_url):
    async with await unicache.AsyncCache.open(cache_url) as c:
        await c.set("k", "v", ttl=60)
        assert await c.get("k") == b"v"
        assert await c.contains("k") is True
        assert await c.add("k", "w") is False
        assert await c.incr("n", 2) == 2
        await c.set_many({"a": b"1", "b": b"2"})
        assert await c.get_many(["a", "b", "z"]) == {"a": b"1", "b": b"2"}
        assert await c.delete_many(["a", "b"]) == 2
        assert 50 < await c.ttl("k") <= 60
        assert (await c.stats())["sets"] >= 3
        assert await c.get_or_set("made", lambda: b"x") == b"x"

        async def make():
            return b"async"

        assert await c.get_or_set("made2", make) == b"async"
        assert await c.get("made2") == b"async"
    with pytest.raises(unicache.ClosedError):
        await c.get("k")


@pytest.mark.asyncio
async def test_calls_overlap_on_a_server(redis_server):
    c = await unicache.AsyncCache.open(redis_server.url + "?namespace=aio")
    await c.set("k", "v")
    t = time.perf_counter()
    results = await asyncio.gather(*(c.get("k") for _ in range(200)))
    assert results == [b"v"] * 200
    assert time.perf_counter() - t < 10
    await c.close()

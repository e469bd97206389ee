"""AsyncCache is native asyncio: awaiting a call occupies no Python thread,
and it works on uvloop."""

import asyncio
import threading

import pytest

import unicache_rs


def python_threads():
    return {t.ident for t in threading.enumerate()}


@pytest.mark.asyncio
async def test_awaiting_calls_occupies_no_python_thread(redis_server):
    c = await unicache_rs.AsyncCache.open(redis_server.url + "?namespace=native")
    await c.set("k", "v")
    before = python_threads()
    got = await asyncio.gather(*(c.get("k") for _ in range(2000)))
    assert got == [b"v"] * 2000
    await c.set_many({f"k{i}": str(i) for i in range(100)})
    assert len(await c.get_many([f"k{i}" for i in range(100)])) == 100
    # asyncio.to_thread would have grown the loop's executor to its
    # max_workers threads for 2,000 concurrent calls.
    assert python_threads() == before
    await c.close()


@pytest.mark.asyncio
async def test_cancelling_a_call_leaves_the_cache_usable(redis_server):
    c = await unicache_rs.AsyncCache.open(redis_server.url + "?namespace=native-cancel")
    tasks = [asyncio.ensure_future(c.set(f"k{i}", "v")) for i in range(200)]
    await asyncio.sleep(0)
    for t in tasks[::2]:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert await c.get("k1") == b"v"
    await c.close()


@pytest.mark.asyncio
async def test_errors_are_the_cache_errors(cache_url):
    c = await unicache_rs.AsyncCache.open(cache_url)
    await c.set("n", "not a number")
    with pytest.raises(unicache_rs.InvalidInputError):
        await c.incr("n")
    await c.close()
    with pytest.raises(unicache_rs.ClosedError):
        await c.get("n")


def test_uvloop(cache_url):
    uvloop = pytest.importorskip("uvloop")

    async def main():
        c = await unicache_rs.AsyncCache.open(cache_url)
        await c.set("k", "v")
        assert await c.get("k") == b"v"

        async def make():
            await asyncio.sleep(0.05)
            return b"made"

        got = await asyncio.gather(*(c.get_or_set("m", make) for _ in range(20)))
        assert got == [b"made"] * 20
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(c.get_or_set("slow", lambda: asyncio.sleep(5)), 0.1)
        assert await c.get("slow") is None
        await c.close()

    loop = uvloop.new_event_loop()
    try:
        assert type(loop).__module__.startswith("uvloop")
        loop.run_until_complete(main())
    finally:
        loop.close()

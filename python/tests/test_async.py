"""unicache_rs.AsyncCache: the same methods as coroutines."""

import asyncio
import contextvars
import time

import pytest
import pytest_asyncio

import unicache_rs


@pytest.mark.asyncio
async def test_async_methods(cache_url):
    async with await unicache_rs.AsyncCache.open(cache_url) as c:
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
    with pytest.raises(unicache_rs.ClosedError):
        await c.get("k")


@pytest.mark.asyncio
async def test_calls_overlap_on_a_server(redis_server):
    c = await unicache_rs.AsyncCache.open(redis_server.url + "?namespace=aio")
    await c.set("k", "v")
    t = time.perf_counter()
    results = await asyncio.gather(*(c.get("k") for _ in range(200)))
    assert results == [b"v"] * 200
    assert time.perf_counter() - t < 10
    await c.close()


class Factory:
    """A coroutine factory that counts its runs and notes a cancellation."""

    def __init__(self, value=b"v", delay=0.3, error=None):
        self.value, self.delay, self.error = value, delay, error
        self.runs = 0
        self.cancelled = 0

    async def __call__(self):
        self.runs += 1
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return self.value


@pytest_asyncio.fixture
async def acache(cache_url):
    c = await unicache_rs.AsyncCache.open(cache_url)
    yield c
    await c.close()


@pytest.mark.asyncio
async def test_coroutine_factory_runs_once_for_concurrent_callers(acache):
    f = Factory()
    got = await asyncio.gather(*(acache.get_or_set("k", f.__call__) for _ in range(10)))
    assert got == [b"v"] * 10
    assert f.runs == 1
    assert await acache.get("k") == b"v"


@pytest.mark.asyncio
async def test_coroutine_factory_error_reaches_all_and_is_not_cached(acache):
    f = Factory(error=ValueError("boom"))
    got = await asyncio.gather(
        *(acache.get_or_set("e", f.__call__) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(g, ValueError) and str(g) == "boom" for g in got), got
    assert f.runs == 1
    assert await acache.get("e") is None
    ok = Factory(value=b"second")
    assert await acache.get_or_set("e", ok.__call__) == b"second"


@pytest.mark.asyncio
async def test_cancelled_sole_caller_cancels_the_factory_and_stores_nothing(acache):
    f = Factory(delay=0.5)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(acache.get_or_set("c", f.__call__), 0.2)
    await asyncio.sleep(0.6)
    assert f.cancelled == 1
    assert await acache.get("c") is None
    # A later caller starts afresh.
    assert await acache.get_or_set("c", Factory(value=b"fresh", delay=0).__call__) == b"fresh"


@pytest.mark.asyncio
async def test_cancelled_leader_leaves_the_factory_to_the_other_waiters(acache):
    f = Factory(delay=0.4)
    leader = asyncio.ensure_future(acache.get_or_set("h", f.__call__))
    await asyncio.sleep(0.1)
    other = Factory(value=b"other's")
    waiter = asyncio.ensure_future(acache.get_or_set("h", other.__call__))
    await asyncio.sleep(0.1)
    leader.cancel()
    assert await waiter == b"v"
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert (f.runs, f.cancelled, other.runs) == (1, 0, 0)
    assert await acache.get("h") == b"v"


@pytest.mark.asyncio
async def test_coroutine_and_blocking_callers_share_one_run(acache):
    f = Factory(delay=0.4)
    sync_runs = []

    def sync_factory():
        sync_runs.append(1)
        return b"sync"

    task = asyncio.ensure_future(acache.get_or_set("s", f.__call__))
    await asyncio.sleep(0.15)
    got = await asyncio.to_thread(acache.sync.get_or_set, "s", sync_factory)
    assert (got, await task) == (b"v", b"v")
    assert (f.runs, sync_runs) == (1, [])


@pytest.mark.asyncio
async def test_cancelled_sole_caller_drops_a_plain_factorys_value(acache):
    runs = []

    def slow():
        runs.append(1)
        time.sleep(0.5)
        return b"late"

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(acache.get_or_set("p", slow), 0.2)
    await asyncio.sleep(0.8)
    assert runs == [1]
    assert await acache.get("p") is None


REQUEST = contextvars.ContextVar("request", default=None)


@pytest.mark.asyncio
async def test_factories_run_in_the_callers_context(acache):
    async def coro():
        return f"coro:{REQUEST.get()}".encode()

    def plain():
        return f"plain:{REQUEST.get()}".encode()

    REQUEST.set("r1")
    assert await acache.get_or_set("ctx1", coro) == b"coro:r1"
    assert await acache.get_or_set("ctx2", plain) == b"plain:r1"

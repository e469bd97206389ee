"""Every public method of Cache and AsyncCache, typed: `mypy --strict` must
accept this file (tests/test_typing.py), and it runs against memory:// or
the URL in argv[1]."""

import asyncio
import datetime
import sys

import unicache_rs
from unicache_rs import AsyncCache, Cache


def sync_part(url: str) -> None:
    with Cache(url, namespace="typing", default_ttl=None, compress="zlib", compress_min_size=64) as c:
        assert c.url and c.backend_name
        ttl0: float | None = c.default_ttl
        assert ttl0 is None
        c.set("a", "1")
        c.set("b", b"2", ttl=60)
        c.set("c", bytearray(b"3"), ttl=datetime.timedelta(seconds=60))
        v: bytes | None = c.get("a")
        d: bytes | str = c.get("nope", "default")
        assert v == b"1" and d == "default"
        assert c.add("d", "4", ttl=60) and not c.add("d", "5")
        assert c.compare_and_set("d", "4", "6")
        n: int = c.incr("n") + c.decr("n", 1)
        assert n == 1
        assert c.touch("a", 30)
        left: float | None = c.ttl("a")
        assert left is not None
        got = c.get_with_ttl("a")
        assert got is not None and got[0] == b"1"
        lists = c.backend_name != "memcached"  # memcached cannot count or list keys
        assert "a" in c and (not lists or len(c) >= 1)
        many: dict[str, bytes] = c.get_many(["a", "b"])
        c.set_many({"x": "1", "y": "2"}, ttl=60)
        c.set_many([("z", b"3")])
        gone: int = c.delete_many(["x", "y"]) + (c.delete_prefix("z") if lists else c.delete("z"))
        assert many and gone == 3
        assert c.delete("b")
        keys: list[str] = list(c.keys()) if lists else ["-"]
        stats: dict[str, object] = c.stats()
        assert keys and stats
        built: bytes = c.get_or_set("built", lambda: "x" * 100, ttl=60)
        assert built == b"x" * 100
        assert c.expire("built", 10) and c.persist("built")
        with c.lock("job", timeout=10, blocking_timeout=1) as lock:
            lock.extend(20)
            assert lock.locked()
        lk = c.lock("job2")
        if lk.acquire(blocking=False):
            lk.release()

        @c.memoize(ttl=60)
        def square(x: int) -> int:
            return x * x

        sq: int = square(4)
        key: str = square.cache_key(4)
        assert sq == 16 and key and square.invalidate(4)
        aio: AsyncCache = c.aio
        assert aio.sync is c
        c.clear()
        if "memory" in url:
            c.clear_all()


async def async_part(url: str) -> None:
    async with await AsyncCache.open(url, namespace="typing-aio") as c:
        await c.set("a", "1", ttl=60)
        v: bytes | None = await c.get("a")
        d: bytes | int = await c.get("nope", 0)
        assert v == b"1" and d == 0
        assert await c.add("b", b"2") and await c.compare_and_set("b", b"2", b"3")
        n: int = await c.incr("n", 2) + await c.decr("n")
        assert n == 3
        assert await c.touch("a", 30)
        left: float | None = await c.ttl("a")
        got: tuple[bytes, float] | None = await c.get_with_ttl("a")
        assert left is not None and got is not None
        lists = c.sync.backend_name != "memcached"
        assert await c.contains("a") and (not lists or await c.len() >= 1)
        await c.set_many({"x": "1"}, ttl=60)
        many: dict[str, bytes] = await c.get_many(["a", "x"])
        gone: int = await c.delete_many(["x"]) + (await c.delete_prefix("zz") if lists else 0)
        assert many and gone == 1 and await c.delete("b")
        keys: list[str] = await c.keys() if lists else ["-"]
        stats: dict[str, object] = await c.stats()
        assert keys and stats

        async def make() -> str:
            await asyncio.sleep(0)
            return "made"

        made: bytes = await c.get_or_set("made", make, ttl=60)
        plain: bytes = await c.get_or_set("plain", lambda: b"p")
        assert made == b"made" and plain == b"p"
        assert await c.expire("made", 10) and await c.persist("made")
        async with c.lock("job", timeout=10, blocking_timeout=1) as lock:
            await lock.extend(20)
            assert await lock.locked()

        @c.memoize(ttl=60)
        async def double(x: int) -> int:
            return 2 * x

        dd: int = await double(21)
        assert dd == 42 and await double.invalidate(21)
        assert isinstance(c.sync, unicache_rs.Cache)
        await c.clear()
        if "memory" in url:
            await c.clear_all()
    other = AsyncCache(url)
    await other.close()


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "memory://"
    sync_part(target)
    asyncio.run(async_part(target))
    print("ok")

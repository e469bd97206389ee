"""lock, memoize, expire/persist, delete_prefix and compression on every
backend, across processes where it matters."""

import asyncio
import functools
import subprocess
import sys
import textwrap
import time
import zlib

import pytest

import unicache_rs


def skip_unsupported(fn, *args):
    try:
        return fn(*args)
    except unicache_rs.UnsupportedError as e:
        pytest.skip(f"not on this backend: {e}")


def run_py(code, *args, timeout=60):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---------------------------------------------------------------- expire / persist

def test_expire_and_persist(cache, backend):
    cache.set("k", "v")
    assert cache.expire("k", 60) is True
    assert 50 < cache.ttl("k") <= 60
    assert cache.persist("k") is True
    assert cache.ttl("k") == float("inf") or backend == "memcached" and cache.ttl("k") is not None
    assert cache.expire("absent", 5) is False and cache.persist("absent") is False
    with pytest.raises(unicache_rs.InvalidInputError):
        cache.expire("k", None)


def test_persist_under_a_default_ttl(make_url, backend):
    # Native persist: the default TTL is what set() applies, never persist().
    with unicache_rs.Cache(make_url(backend), default_ttl=1) as c:
        c.set("k", "v")
        c.set("other", "o")
        assert 0 < c.ttl("k") <= 1
        assert c.persist("k") is True
        assert c.ttl("k") == float("inf")
        assert c.persist("absent") is False
        time.sleep(2.1)
        assert c.get("k") == b"v"
        assert c.get("other") is None


@pytest.mark.asyncio
async def test_async_expire_and_persist(make_url, backend):
    c = await unicache_rs.AsyncCache.open(make_url(backend), default_ttl=1)
    await c.set("k", "v")
    assert await c.expire("k", 60) and 50 < await c.ttl("k") <= 60
    assert await c.persist("k") is True
    assert await c.ttl("k") == float("inf")
    assert await c.persist("absent") is False
    await c.close()


# ---------------------------------------------------------------- delete_prefix

def test_delete_prefix_stays_in_its_prefix_and_namespace(make_url, backend):
    url = make_url(backend)
    with unicache_rs.Cache(url, namespace="dp-a") as a, unicache_rs.Cache(url, namespace="dp-b") as b:
        a.set_many({"user:1": "x", "user:2": "y", "users": "z", "other": "w"})
        b.set("user:1", "theirs")
        n = skip_unsupported(a.delete_prefix, "user:")
        assert n == 2
        assert sorted(a.keys()) == ["other", "users"]
        assert b.get("user:1") == b"theirs"


@pytest.mark.asyncio
async def test_async_delete_prefix(cache_url, backend):
    c = await unicache_rs.AsyncCache.open(cache_url)
    await c.set_many({"p:1": "1", "p:2": "2", "q": "3"})
    if backend == "memcached":
        with pytest.raises(unicache_rs.UnsupportedError):
            await c.delete_prefix("p:")
    else:
        assert await c.delete_prefix("p:") == 2
        assert await c.keys() == ["q"]
    await c.close()


# ---------------------------------------------------------------- compression

def test_compression_round_trips_and_reads_plain_values(make_url, backend):
    big = "x" * 10_000
    url = make_url(backend)
    with unicache_rs.Cache(url, namespace="cz", compress="zstd", compress_min_size=100) as z:
        # Another handle of the same store without compression sees the
        # bytes as stored (memory:// has no second handle: round trips only).
        plain = None if backend == "memory" else unicache_rs.Cache(url, namespace="cz")
        z.set("big", big)
        z.set("small", "tiny")
        assert z.get("big") == big.encode() and z.get("small") == b"tiny"
        if plain is not None:
            stored = plain.get("big")
            assert stored.startswith(b"\x00uczs") and len(stored) < 1000  # compressed
            assert plain.get("small") == b"tiny"  # under the threshold: as is
            plain.set("legacy", big)  # written without compression: still read
            assert z.get("legacy") == big.encode()
        z.set("tricky", b"\x00uczs-not-compressed")
        assert z.get("tricky") == b"\x00uczs-not-compressed"
        if plain is not None:
            assert plain.get("tricky") == b"\x00uczr\x00uczs-not-compressed"
        z.set_many({"m1": big, "m2": "s"})
        assert z.get_many(["m1", "m2"]) == {"m1": big.encode(), "m2": b"s"}
        assert z.get_or_set("made", lambda: big) == big.encode()
        if plain is not None:
            assert plain.get("made").startswith(b"\x00ucz")
        assert z.get_with_ttl("m1")[0] == big.encode()
        assert z.add("added", big) and z.get("added") == big.encode()
        assert z.compare_and_set("added", big, "y" * 5000) and z.get("added") == b"y" * 5000
        assert z.incr("n", 2) == 2 and z.incr("n") == 3  # counters stay counters
        if plain is not None:
            plain.close()


def test_compressed_bytes_are_zlib_and_zstd_streams(make_url):
    # The format, checked with Python's own decompressors (and the other
    # way round): MARK + tag + a zlib stream or a zstd frame.
    import zstandard

    url = make_url("sqlite")
    big = b"hello " * 300
    with unicache_rs.Cache(url, namespace="fmt") as plain:
        for algo, tag in (("zlib", b"z"), ("zstd", b"s")):
            with unicache_rs.Cache(url, namespace="fmt", compress=algo, compress_min_size=0) as c:
                c.set(algo, big)
                raw = plain.get(algo)
                assert raw[:5] == b"\x00ucz" + tag
                body = raw[5:]
                got = zlib.decompress(body) if algo == "zlib" else zstandard.ZstdDecompressor().decompress(body)
                assert got == big
        plain.set("from-py-zlib", b"\x00uczz" + zlib.compress(big, 6))
        plain.set("from-py-zstd", b"\x00uczs" + zstandard.ZstdCompressor(level=3).compress(big))
        with unicache_rs.Cache(url, namespace="fmt", compress="zlib") as c:
            assert c.get("from-py-zlib") == big and c.get("from-py-zstd") == big


def test_zlib_compression_needs_nothing_extra():
    with unicache_rs.Cache("memory://", compress="zlib", compress_min_size=10) as z:
        z.set("k", "y" * 1000)
        assert z.get("k") == b"y" * 1000
    with pytest.raises(unicache_rs.InvalidInputError, match="compress"):
        unicache_rs.Cache("memory://", compress="lz4")
    with pytest.raises(unicache_rs.InvalidInputError, match="compress_min_size"):
        unicache_rs.Cache("memory://", compress="zlib", compress_min_size=-1)


@pytest.mark.asyncio
async def test_async_compression(cache_url):
    c = await unicache_rs.AsyncCache.open(cache_url, compress="zlib", compress_min_size=10)
    await c.set("k", "z" * 1000)
    if not cache_url.startswith("memory:"):
        # Another handle without compression: the bytes as stored.
        with unicache_rs.Cache(cache_url) as plain:
            assert plain.get("k").startswith(b"\x00uczz")
    assert await c.get("k") == b"z" * 1000
    assert await c.get_or_set("g", lambda: "w" * 500) == b"w" * 500
    await c.close()


# ---------------------------------------------------------------- lock

def test_lock_excludes_and_only_the_holder_releases(cache):
    lock = cache.lock("job", timeout=10, blocking_timeout=0.2)
    with lock:
        assert lock.locked()
        other = cache.lock("job", timeout=10, blocking_timeout=0.1)
        t = time.monotonic()
        assert other.acquire() is False
        assert time.monotonic() - t >= 0.09
        with pytest.raises(unicache_rs.LockError):
            with other:
                pass
        with pytest.raises(unicache_rs.LockNotOwnedError):
            other.release()
        lock.extend(30)
        assert cache.ttl(lock.key) > 20
    assert not lock.locked()
    with pytest.raises(unicache_rs.LockNotOwnedError):
        lock.release()
    with cache.lock("job", timeout=10, blocking_timeout=0.1):  # free again at once
        pass


def test_expired_lock_is_not_released_by_its_old_holder(cache, backend):
    ttl = 2 if backend == "memcached" else 0.3  # memcached's TTLs are whole seconds
    first = cache.lock("exp", timeout=ttl)
    assert first.acquire()
    time.sleep(ttl + 1.2 if backend == "memcached" else ttl + 0.2)
    second = cache.lock("exp", timeout=10)
    assert second.acquire(blocking=False)
    with pytest.raises(unicache_rs.LockNotOwnedError):
        first.release()
    with pytest.raises(unicache_rs.LockNotOwnedError):
        first.extend(10)
    assert second.locked()
    second.release()


LOCK_WORKER = """
import sys, time, unicache_rs
c = unicache_rs.Cache(sys.argv[1])
for _ in range(int(sys.argv[2])):
    with c.lock("counter", timeout=10, blocking_timeout=30):
        n = int(c.get("plain", b"0"))
        time.sleep(0.002)
        c.set("plain", str(n + 1))
print("done")
"""


def test_lock_across_processes(cache_url, backend):
    if backend == "memory":
        pytest.skip("memory:// is per process")
    with unicache_rs.Cache(cache_url) as c:
        c.delete("plain")
        procs = [run_py(LOCK_WORKER, cache_url, "15") for _ in range(3)]
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        # A read-modify-write under the lock loses no update.
        assert c.get("plain") == b"45"


@pytest.mark.asyncio
async def test_async_lock_excludes_blocking_holders(cache_url):
    c = await unicache_rs.AsyncCache.open(cache_url)
    async with c.lock("aj", timeout=10) as lock:
        assert await lock.locked()
        assert c.sync.lock("aj", blocking_timeout=0.05).acquire() is False
        await lock.extend(20)
    assert c.sync.lock("aj").acquire(blocking=False)
    await c.close()


# ---------------------------------------------------------------- memoize

def test_memoize_sync_keys_from_arguments(cache):
    calls = []

    @cache.memoize(ttl=60)
    def area(w, h=1):
        calls.append((w, h))
        return {"area": w * h}

    assert area(2, h=3) == {"area": 6} and area(2, h=3) == {"area": 6}
    assert area(2, 4) == {"area": 8}
    assert calls == [(2, 3), (2, 4)]
    assert area.invalidate(2, h=3)
    assert area(2, h=3) == {"area": 6} and len(calls) == 3
    assert 50 < cache.ttl(area.cache_key(2, 4)) <= 60


@pytest.mark.asyncio
async def test_memoize_async_single_flight(cache_url):
    c = await unicache_rs.AsyncCache.open(cache_url)
    runs = []

    @c.memoize(ttl=60)
    async def fetch(x):
        runs.append(x)
        await asyncio.sleep(0.1)
        return [x, x]

    got = await asyncio.gather(*(fetch(7) for _ in range(10)))
    assert got == [[7, 7]] * 10 and runs == [7]

    @c.sync.memoize()
    async def via_sync_cache(x):
        return x + 1

    assert await via_sync_cache(1) == 2
    await c.close()


MEMO_WORKER = """
import sys, unicache_rs
c = unicache_rs.Cache(sys.argv[1])
@c.memoize(ttl=60, prefix="shared")
def compute(x):
    print("ran")
    return x * 10
print(compute(4))
"""


def test_memoize_shared_across_processes(cache_url, backend):
    if backend == "memory":
        pytest.skip("memory:// is per process")
    first = run_py(MEMO_WORKER, cache_url)
    out1, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    second = run_py(MEMO_WORKER, cache_url)
    out2, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert out1.split() == ["ran", "40"] and out2.split() == ["40"]

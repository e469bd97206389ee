"""unicache_rs.Cache on every backend: real files and real servers."""

import math
import threading
import time

import pytest

import unicache_rs


def needs(fn):
    """fn(); skips the test where the backend does not have the operation yet."""
    try:
        return fn()
    except unicache_rs.UnsupportedError as e:
        pytest.skip(str(e))


def test_set_get_bytes_and_str(cache):
    cache.set("a", b"\x00\xffbytes")
    cache.set("b", "héllo")
    assert cache.get("a") == b"\x00\xffbytes"
    assert cache.get("b") == "héllo".encode()
    assert cache.get("missing") is None
    assert cache.get("missing", b"dflt") == b"dflt"
    cache.set("c", bytearray(b"ba"))
    assert cache.get("c") == b"ba"


def test_delete_contains(cache):
    cache.set("k", "v")
    assert "k" in cache
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert "k" not in cache


def test_many(cache):
    cache.set_many({f"k{i}": f"v{i}" for i in range(50)})
    cache.set_many([("p1", b"x"), ("p2", "y")])
    got = cache.get_many([f"k{i}" for i in range(0, 60, 5)] + ["p2"])
    assert got == {**{f"k{i}": f"v{i}".encode() for i in range(0, 50, 5)}, "p2": b"y"}
    assert cache.delete_many(["k1", "k2", "nope"]) == 2
    assert cache.get_many(["k1", "k2"]) == {}


def test_ttl_expiry(cache):
    cache.set("short", "v", ttl=1)
    cache.set("long", "v", ttl=100)
    cache.set("forever", "v")
    left = cache.ttl("long")
    assert 90 < left <= 100
    assert cache.ttl("forever") == math.inf
    assert cache.ttl("absent") is None
    time.sleep(2.1)  # memcached counts whole seconds
    assert cache.get("short") is None
    assert cache.get("long") == b"v"


def test_get_with_ttl(cache):
    cache.set("long", "v", ttl=100)
    value, left = needs(lambda: cache.get_with_ttl("long"))
    assert value == b"v" and 90 < left <= 100
    assert cache.get_with_ttl("absent") is None


def test_add_incr_touch(cache):
    assert needs(lambda: cache.add("a", "1")) is True
    assert cache.add("a", "2") is False
    assert cache.get("a") == b"1"
    assert cache.incr("n") == 1
    assert cache.incr("n", 10) == 11
    assert cache.decr("n", 3) == 8
    assert cache.get("n") == b"8"
    cache.set("text", "abc")
    with pytest.raises(unicache_rs.InvalidInputError):
        cache.incr("text")
    assert cache.touch("a", ttl=50) is True
    assert 40 < cache.ttl("a") <= 50
    assert cache.touch("absent", ttl=5) is False


def test_clear_is_namespace_safe(make_url, backend):
    base = make_url(backend)
    sep = "&" if "?" in base else "?"
    if backend == "memory":
        pytest.skip("a memory cache is its own namespace")
    with unicache_rs.Cache(base + sep + "namespace=one") as one, unicache_rs.Cache(base.split("?")[0] + sep.replace("&", "?") + "namespace=two") as two:
        one.set("k", "1")
        two.set("k", "2")
        one.clear()
        assert one.get("k") is None
        assert two.get("k") == b"2"


def test_namespace_argument(make_url, backend):
    if backend == "memory":
        pytest.skip("a memory cache is its own namespace")
    url = make_url(backend).split("?")[0]
    a = unicache_rs.Cache(url, namespace="nsa")
    b = unicache_rs.Cache(url, namespace="nsb")
    a.set("k", "a")
    assert b.get("k") is None
    a.clear()
    b.clear()


def test_default_ttl(make_url, backend):
    c = unicache_rs.Cache(make_url(backend), default_ttl=100)
    c.set("k", "v")
    assert 90 < c.ttl("k") <= 100
    c.close()


def test_keys_and_len(cache, backend):
    cache.set_many({f"key{i}": "v" for i in range(2500)})
    if backend == "memcached":
        with pytest.raises(unicache_rs.UnsupportedError):
            list(cache.keys())
        return
    keys = cache.keys()
    assert iter(keys) is keys
    assert sorted(keys) == sorted(f"key{i}" for i in range(2500))
    assert len(cache) == 2500


def test_stats(cache):
    cache.set("k", "v")
    cache.get("k")
    cache.get("nope")
    s = cache.stats()
    assert s["hits"] == 1 and s["misses"] == 1 and s["sets"] == 1
    assert isinstance(s["backend"], str)


def test_close_and_context_manager(cache_url):
    with unicache_rs.Cache(cache_url) as c:
        c.set("k", "v")
    with pytest.raises(unicache_rs.ClosedError):
        c.get("k")
    c.close()  # a second close is harmless


def test_get_or_set_single_flight(cache):
    calls = []
    barrier = threading.Barrier(8)
    results = []

    def factory():
        calls.append(1)
        time.sleep(0.3)
        return b"made"

    def worker():
        barrier.wait()
        results.append(cache.get_or_set("sf", factory, ttl=60))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [b"made"] * 8
    assert len(calls) == 1
    assert cache.get_or_set("sf", lambda: pytest.fail("cached")) == b"made"


def test_get_or_set_factory_may_use_the_cache(cache):
    cache.set("base", "40")

    def factory():
        return str(int(cache.get("base")) + 2)

    assert cache.get_or_set("derived", factory) == b"42"
    assert cache.get("derived") == b"42"


def test_get_or_set_exception_reaches_every_waiter(cache):
    barrier = threading.Barrier(4)
    errors = []
    calls = []

    class Boom(Exception):
        pass

    def factory():
        calls.append(1)
        time.sleep(0.3)
        raise Boom("no value")

    def worker():
        barrier.wait()
        try:
            cache.get_or_set("boom", factory)
        except Boom as e:
            errors.append(str(e))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == ["no value"] * 4
    assert len(calls) == 1
    assert cache.get("boom") is None


def test_bad_arguments(cache):
    with pytest.raises(TypeError):
        cache.set("k", 12)
    with pytest.raises(TypeError):
        cache.get(b"bytes key")
    with pytest.raises(unicache_rs.InvalidInputError):
        cache.set("k", "v", ttl=0)
    with pytest.raises(ValueError):
        cache.set("k", "v", ttl=-1)

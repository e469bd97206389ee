"""unicache_rs.cachelib.UnicacheCache: cachelib's BaseCache semantics on every backend."""

import time

import pytest

pytest.importorskip("cachelib")

from cachelib.serializers import BaseSerializer  # noqa: E402

from unicache_rs.cachelib import UnicacheCache  # noqa: E402


@pytest.fixture
def lib(cache_url):
    c = UnicacheCache(cache_url, default_timeout=60, key_prefix="p:")
    yield c
    c.cache.close()


def test_values_round_trip(lib):
    for v in [1, -5, "s", b"b", 1.5, [1, "a"], {"x": (1, 2)}, None, True]:
        assert lib.set("k", v) is True
        assert lib.get("k") == v
    assert lib.get("missing") is None
    assert lib.cache.get("p:k") is not None  # key_prefix applies


def test_add_has_delete(lib):
    assert lib.add("a", 1) is True
    assert lib.add("a", 2) is False
    assert lib.get("a") == 1
    assert lib.has("a") and not lib.has("b")
    assert lib.delete("a") is True and lib.delete("a") is False


def test_many(lib):
    assert sorted(lib.set_many({"a": 1, "b": "x"})) == ["a", "b"]
    assert lib.get_many("a", "b", "c") == [1, "x", None]
    assert lib.get_dict("a", "c") == {"a": 1, "c": None}
    assert sorted(lib.delete_many("a", "b")) == ["a", "b"]
    assert lib.get_many("a", "b") == [None, None]


def test_inc_dec_atomic_on_store(lib):
    lib.set("n", 10)
    assert lib.inc("n") == 11
    assert lib.dec("n", 5) == 6
    assert lib.get("n") == 6
    assert lib.inc("fresh", 3) == 3


def test_timeouts(lib):
    lib.set("forever", "v", timeout=0)
    assert lib.cache.ttl("p:forever") == float("inf")
    lib.set("default", "v")
    assert 50 < lib.cache.ttl("p:default") <= 60
    lib.set("short", "v", timeout=1)
    time.sleep(2.1)
    assert lib.get("short") is None
    assert lib.get("forever") == "v"


def test_callable_prefix_and_serializer(cache_url):
    class Upper(BaseSerializer):
        def dumps(self, value, protocol=None):
            return value.upper().encode()

        def loads(self, bvalue):
            return bvalue.decode()

    c = UnicacheCache(cache_url, key_prefix=lambda: "dyn:")
    c.serializer = Upper()
    c.set("k", "abc")
    assert c.get("k") == "ABC"
    assert c.cache.get("dyn:k") == b"ABC"
    c.cache.close()


def test_clear(lib):
    lib.set("a", 1)
    assert lib.clear() is True
    assert lib.get("a") is None


def test_ignore_delete_many_errors_is_accepted(cache_url):
    c = UnicacheCache(cache_url, ignore_delete_many_errors=False)
    assert c.ignore_delete_many_errors is False
    c.set("bacon", "spam")
    assert c.delete_many("eggs", "bacon") == ["eggs", "bacon"]
    c.cache.close()


def test_clear_with_a_prefix_deletes_only_its_keys_without_a_namespace(redis_server):
    import unicache_rs

    raw = unicache_rs.Cache(redis_server.url)
    other = f"other:{time.time_ns()}"
    raw.set(other, "kept")
    c = UnicacheCache(redis_server.url, key_prefix=f"mine{time.time_ns()}:")
    c.set_many({"a": 1, "b": 2})
    assert c.clear() is True
    assert c.get_many("a", "b") == [None, None]
    assert raw.get(other) == b"kept"
    raw.delete(other)
    raw.close()
    c.cache.close()


@pytest.mark.parametrize("backend", ["memory", "sqlite", "file"])
def test_threshold_bounds_the_entries(make_url, backend):
    # SQLite keeps the bound itself (at most threshold); memory and the file
    # log are pruned as cachelib prunes (at most threshold + 1).
    most = 10 if backend == "sqlite" else 11
    c = UnicacheCache(make_url(backend), threshold=10)
    for i in range(25):
        assert c.set(f"s{i}", i)
    assert len(c.cache) == most
    assert c.get("s24") == 24  # the newest is always kept
    c.set_many({f"m{i}": i for i in range(25)})  # more than threshold at once
    assert len(c.cache) == most
    assert c.get("m24") == 24
    c.add("a", 1)
    assert len(c.cache) == most and c.get("a") == 1
    c.cache.close()


def test_threshold_on_sqlite_is_the_files_bound(tmp_path):
    import unicache_rs

    c = UnicacheCache(f"sqlite:{tmp_path}/c.sqlite3", threshold=10)
    with unicache_rs.Cache(f"sqlite:{tmp_path}/c.sqlite3") as other:
        other.set_many({f"o{i}": "v" for i in range(50)})
        assert len(other) == 10
    assert c.cache.stats()["server"]["bounded"]["max_entries"] == 10
    c.cache.close()


@pytest.mark.parametrize("threshold", [None, 0])
def test_no_threshold_no_bound(make_url, threshold):
    c = UnicacheCache(make_url("sqlite"), threshold=threshold)
    c.set_many({f"k{i}": i for i in range(600)})  # past cachelib's default of 500
    assert len(c.cache) == 600
    assert "bounded" not in c.cache.stats()["server"]
    c.cache.close()


def test_threshold_is_refused_where_it_cannot_hold(redis_server, memcached_server):
    import unicache_rs

    with pytest.raises(unicache_rs.UnsupportedError, match="redis cannot keep"):
        UnicacheCache(redis_server.url, threshold=10)
    with pytest.raises(unicache_rs.UnsupportedError, match="memcached cannot keep"):
        UnicacheCache(memcached_server.url, threshold=10)
    for bad in (-1, 2.5, "10", True):
        with pytest.raises(ValueError, match="threshold must be an int"):
            UnicacheCache("memory://", threshold=bad)


def test_threshold_prunes_an_open_cache_passed_in(tmp_path):
    import unicache_rs

    raw = unicache_rs.Cache(f"sqlite:{tmp_path}/c.sqlite3")
    c = UnicacheCache(raw, threshold=5)
    for i in range(20):
        c.set(f"k{i}", i)
    assert len(raw) == 6
    raw.close()

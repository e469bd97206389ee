"""unicache_rs.Cache(url, max_bytes=..., max_entries=..., max_age=...): the
bounds reach the store (SQLite keeps them in the file, memory:// in its
capacity), win over the URL's, and a backend that cannot keep one raises
UnsupportedError instead of ignoring it."""

import asyncio
import datetime

import pytest

import unicache_rs


def bounded(c):
    """The SQLite file's bounds and usage, from stats()."""
    return c.stats()["server"]["bounded"]


def test_max_entries_bounds_a_sqlite_file(tmp_path):
    with unicache_rs.Cache(f"sqlite:{tmp_path}/c.sqlite3", max_entries=20) as c:
        for i in range(100):
            c.set(f"k{i:03}", "v")
        assert len(c) == 20
        assert "k099" in c  # the newest stay: eviction is in write order
        b = bounded(c)
        assert b["max_entries"] == 20 and b["evictions"] == 80
    # A property of the file: a client that opens it without a bound keeps it.
    with unicache_rs.Cache(f"sqlite:{tmp_path}/c.sqlite3") as other:
        other.set_many({f"o{i}": "v" for i in range(50)})
        assert len(other) == 20


@pytest.mark.parametrize(
    "given, expected",
    [(2000, 2000), ("2kB", 2000), ("2 KiB", 2048), ("0.5MB", 500_000)],
)
def test_max_bytes_takes_ints_and_size_strings(tmp_path, given, expected):
    with unicache_rs.Cache(f"sqlite:{tmp_path}/c.sqlite3", max_bytes=given) as c:
        assert bounded(c)["max_bytes"] == expected
        for i in range(200):
            c.set(f"k{i}", b"x" * 100)
        assert 0 < bounded(c)["bytes_used"] <= expected


@pytest.mark.parametrize(
    "given, ms",
    [(90, 90_000), (1.5, 1_500), ("7d", 7 * 86_400_000), (datetime.timedelta(hours=2), 7_200_000)],
)
def test_max_age_takes_seconds_timedeltas_and_duration_strings(tmp_path, given, ms):
    with unicache_rs.Cache(f"sqlite:{tmp_path}/c.sqlite3", max_age=given) as c:
        assert bounded(c)["max_age_ms"] == ms


def test_arguments_win_over_the_url(tmp_path):
    url = f"sqlite:{tmp_path}/c.sqlite3?max_entries=5&max_bytes=1MB"
    with unicache_rs.Cache(url, max_entries=7) as c:
        b = bounded(c)
        assert (b["max_entries"], b["max_bytes"]) == (7, 1_000_000)


def test_memory_takes_max_entries_and_max_bytes():
    with unicache_rs.Cache("memory://", max_entries=10) as c:
        c.set_many({f"k{i}": "v" for i in range(100)})
        assert 0 < len(c) <= 10
    with unicache_rs.Cache("memory://", max_bytes="10kB") as c:
        for i in range(100):
            c.set(f"k{i}", b"x" * 1000)
        assert 0 < len(c) <= 10


def test_bounds_a_backend_cannot_keep_are_refused(redis_server, memcached_server):
    with pytest.raises(unicache_rs.UnsupportedError, match="max_age"):
        unicache_rs.Cache("memory://", max_age=60)
    with pytest.raises(unicache_rs.UnsupportedError, match="redis cannot keep"):
        unicache_rs.Cache(redis_server.url, max_entries=10)
    with pytest.raises(unicache_rs.UnsupportedError, match="memcached cannot keep"):
        unicache_rs.Cache(memcached_server.url, max_bytes="1GB")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"max_entries": 0}, unicache_rs.InvalidInputError, "max_entries must be greater than zero"),
        ({"max_entries": -3}, unicache_rs.InvalidInputError, "greater than zero, not -3"),
        ({"max_entries": "lots"}, TypeError, "max_entries must be an int, not str"),
        ({"max_entries": True}, TypeError, "not bool"),
        ({"max_entries": 2.5}, TypeError, "not float"),
        ({"max_bytes": 0}, unicache_rs.InvalidInputError, "max_bytes must be greater than zero"),
        ({"max_bytes": "0MB"}, unicache_rs.InvalidInputError, "max_bytes must be greater than zero"),
        ({"max_bytes": "5 parsecs"}, unicache_rs.InvalidInputError, "bad size"),
        ({"max_bytes": 1.5}, TypeError, "size string"),
        ({"max_age": 0}, unicache_rs.InvalidInputError, "max_age must be greater than zero"),
        ({"max_age": -1}, unicache_rs.InvalidInputError, "invalid max_age"),
        ({"max_age": "soon"}, unicache_rs.InvalidInputError, "bad duration"),
        ({"max_age": [1]}, TypeError, "max_age must be seconds"),
    ],
)
def test_bad_bounds_are_one_line_errors(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        unicache_rs.Cache(f"sqlite:{tmp_path}/c.sqlite3", **kwargs)
    assert not (tmp_path / "c.sqlite3").exists()  # refused before opening


def test_bounds_are_keyword_only(tmp_path):
    with pytest.raises(TypeError):
        unicache_rs.Cache(f"sqlite:{tmp_path}/c.sqlite3", None, None, 10)


def test_async_cache_passes_bounds_on(tmp_path):
    async def main():
        c = await unicache_rs.AsyncCache.open(f"sqlite:{tmp_path}/c.sqlite3", max_entries=3)
        for i in range(10):
            await c.set(f"k{i}", "v")
        n = await c.len()
        await c.close()
        return n

    assert asyncio.run(main()) == 3
    with pytest.raises(unicache_rs.UnsupportedError):
        unicache_rs.AsyncCache("memory://", max_age="1h")


def test_add_and_incr_of_a_new_key_are_not_the_next_evicted(tmp_path):
    # add() and incr() of a new key were stamped by the file's trigger with
    # SQLite's clock, in milliseconds, so behind a set() of the same
    # millisecond (stamped in microseconds): the entry just added was the
    # first evicted (measured: 153 adds lost of 200).
    for i in range(30):
        with unicache_rs.Cache(f"sqlite:{tmp_path}/c{i}.sqlite3", max_entries=3) as c:
            c.set_many({"k1": "v", "k2": "v", "k3": "v"})
            assert c.add("a", "v")
            assert c.incr("n") == 1
            assert sorted(c.keys()) == ["a", "k3", "n"]  # k1, k2 went, oldest first

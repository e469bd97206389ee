"""unicache_rs.django.UnicacheCache's OPTIONS: unknown keys and bounds it
cannot keep are errors naming them; MAX_ENTRIES and CULL_FREQUENCY cull as
Django's LocMemCache and DatabaseCache do on memory://, SQLite and the file
log, and MAX_ENTRIES bounds the store itself where it keeps bounds."""

import uuid

import pytest

pytest.importorskip("django")

from django.core.exceptions import ImproperlyConfigured  # noqa: E402

import unicache_rs  # noqa: E402
from unicache_rs.django import UnicacheCache  # noqa: E402

CULLED = ["memory", "sqlite", "file"]


def backend(location, **options):
    return UnicacheCache(location, {"OPTIONS": options})


@pytest.fixture(params=CULLED)
def location(request, tmp_path):
    """A fresh store (a namespace of its own on memory://, whose handles are
    shared in the process)."""
    return {
        "memory": f"memory://?namespace=t{uuid.uuid4().hex[:12]}",
        "sqlite": f"sqlite:{tmp_path}/django.sqlite3",
        "file": f"file:{tmp_path}/django.jsonl",
    }[request.param]


def test_unknown_options_are_named():
    with pytest.raises(ImproperlyConfigured, match="'MAX_ENTRIEZ'"):
        backend("memory://", MAX_ENTRIEZ=10)
    with pytest.raises(ImproperlyConfigured, match="'db', 'pool'"):
        backend("memory://", pool=1, db=2, namespace="n")


@pytest.mark.parametrize("name", ["MAX_ENTRIES", "CULL_FREQUENCY"])
def test_culling_is_refused_on_redis_and_memcached(name):
    with pytest.raises(ImproperlyConfigured, match=f"{name}.*not supported on redis"):
        backend("redis://127.0.0.1:1", **{name: 100})
    with pytest.raises(ImproperlyConfigured, match=f"{name}.*not supported on memcached"):
        backend("memcached://127.0.0.1:1", **{name: 100})


def test_bad_values_are_refused():
    with pytest.raises(ImproperlyConfigured, match="'MAX_ENTRIES' must be a positive integer"):
        backend("memory://", MAX_ENTRIES="lots")
    with pytest.raises(ImproperlyConfigured, match="positive integer, not 0"):
        backend("memory://", MAX_ENTRIES=0)
    with pytest.raises(ImproperlyConfigured, match="'CULL_FREQUENCY' must be an integer, 0 or more"):
        backend("memory://", CULL_FREQUENCY=-1)
    with pytest.raises(ImproperlyConfigured, match="keep one"):
        backend("sqlite:/tmp/x.sqlite3?max_entries=5", CULL_FREQUENCY=2)


@pytest.mark.parametrize("frequency", [3, 0, 2, 1])
def test_set_culls_as_django_does(location, frequency):
    # Django's test_cull and test_zero_cull: 49 keys into MAX_ENTRIES=30.
    left = expected_after_sets(49, 30, frequency)
    c = backend(location, MAX_ENTRIES=30, CULL_FREQUENCY=frequency)
    for i in range(1, 50):
        c.set(f"cull{i}", "value", 1000)
    assert sum(c.has_key(f"cull{i}") for i in range(1, 50)) == left
    assert len(c.unicache) == left


def expected_after_sets(n_keys, max_entries, frequency):
    """The entry count Django's LocMemCache leaves after n_keys new keys."""
    count = 0
    for _ in range(n_keys):
        if count >= max_entries:
            count = 0 if frequency == 0 else count - count // frequency
        count += 1
    return count


def test_expected_counts_match_djangos_own_tests():
    assert expected_after_sets(49, 30, 3) == 29  # Django's test_cull
    assert expected_after_sets(49, 30, 0) == 19  # Django's test_zero_cull


@pytest.mark.parametrize("n", [1, 29, 30, 31, 49, 200])
def test_set_many_culls_as_that_many_sets(location, n):
    c = backend(location, MAX_ENTRIES=30, CULL_FREQUENCY=3)
    c.set_many({f"k{i}": i for i in range(n)})
    assert len(c.unicache) == expected_after_sets(n, 30, 3)
    assert c.get(f"k{n - 1}") == n - 1  # the last one is always there


def test_add_culls(location):
    c = backend(location, MAX_ENTRIES=10, CULL_FREQUENCY=0)
    for i in range(10):
        assert c.add(f"k{i}", i)
    assert len(c.unicache) == 10
    assert c.add("k10", 10)
    assert len(c.unicache) == 1 and c.get("k10") == 10


def test_cull_frequency_alone_culls_at_djangos_default_300(location):
    c = backend(location, CULL_FREQUENCY=2)
    c.set_many({f"k{i}": i for i in range(301)})
    assert len(c.unicache) == expected_after_sets(301, 300, 2) == 151


def test_without_max_entries_nothing_is_culled(location):
    c = backend(location)
    c.set_many({f"k{i}": i for i in range(400)})
    for i in range(400, 450):
        c.set(f"k{i}", i)
    assert len(c.unicache) == 450


def test_max_entries_bounds_the_sqlite_file_for_other_clients(tmp_path):
    c = backend(f"sqlite:{tmp_path}/django.sqlite3", MAX_ENTRIES=50)
    c.set("a", 1)
    stats = c.unicache.stats()["server"]["bounded"]
    assert stats["max_entries"] == 50
    # Another client (another process, a tool) writing the same file.
    with unicache_rs.Cache(f"sqlite:{tmp_path}/django.sqlite3") as other:
        other.set_many({f"o{i}": "v" for i in range(500)})
        assert len(other) == 50


def test_memory_aliases_with_one_location_share_one_store():
    # As LocMemCache: clear() on one alias empties what another culls.
    plain = backend("memory://?namespace=shared")
    culled = backend("memory://?namespace=shared", MAX_ENTRIES=30)
    culled.set("a", 1)
    assert plain.get("a") == 1
    plain.clear()
    assert culled.get("a") is None


def test_the_file_log_is_culled_by_the_adapter(tmp_path):
    # The file log keeps no bounds yet: opened without one, culled here.
    c = backend(f"file:{tmp_path}/django.jsonl", MAX_ENTRIES=20)
    for i in range(100):
        c.set(f"k{i}", i)
    assert len(c.unicache) == expected_after_sets(100, 20, 3) <= 20

"""unicache.django.UnicacheCache's OPTIONS: unknown keys and bounds it
cannot keep are errors naming them; MAX_ENTRIES bounds a memory:// cache."""

import pytest

pytest.importorskip("django")

from django.core.exceptions import ImproperlyConfigured  # noqa: E402

from unicache.django import UnicacheCache  # noqa: E402


def backend(location, **options):
    return UnicacheCache(location, {"OPTIONS": options})


def test_unknown_options_are_named():
    with pytest.raises(ImproperlyConfigured, match="'MAX_ENTRIEZ'"):
        backend("memory://", MAX_ENTRIEZ=10)
    with pytest.raises(ImproperlyConfigured, match="'db', 'pool'"):
        backend("memory://", pool=1, db=2, namespace="n")


@pytest.mark.parametrize("name", ["MAX_ENTRIES", "CULL_FREQUENCY"])
def test_bounds_the_backend_cannot_keep_are_refused(tmp_path, name):
    with pytest.raises(ImproperlyConfigured, match=f"{name}.*not supported on sqlite"):
        backend(f"sqlite:{tmp_path}/c.sqlite3", **{name: 100})
    with pytest.raises(ImproperlyConfigured, match=f"{name}.*not supported on redis"):
        backend("redis://127.0.0.1:1", **{name: 100})


def test_max_entries_bounds_a_memory_cache():
    c = backend("memory://", MAX_ENTRIES=50, CULL_FREQUENCY=3, namespace="bounded")
    for i in range(1000):
        c.set(f"k{i}", i)
    assert 0 < len(c.unicache) <= 50
    with pytest.raises(ImproperlyConfigured, match="positive integer"):
        backend("memory://", MAX_ENTRIES="lots")
    with pytest.raises(ImproperlyConfigured, match="keep one"):
        backend("memory://?capacity=5", MAX_ENTRIES=10)

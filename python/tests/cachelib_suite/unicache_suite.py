"""cachelib's own generic test classes (its source's tests/common.py,
clear.py, has.py, delete_many_with_prefix.py, serializer.py) against
unicache_rs.cachelib.UnicacheCache, per backend. Copied beside those files
as test_unicache_suite.py and run with pytest by ../test_cachelib_suite.py (not
collected here: it imports cachelib's test modules); the URLs come from the
environment (UNICACHE_CACHELIB_<BACKEND>). cachelib's SimpleCache and
FileSystemCache threshold tests read those caches' private state: they are
here, reading the store's count instead."""

import os
import time
import uuid

import pytest
from clear import ClearTests
from common import CommonTests
from delete_many_with_prefix import DeleteManyWithPrefixTests
from has import HasTests
from serializer import SerializerTests

from unicache_rs.cachelib import UnicacheCache

BACKENDS = ["memory", "sqlite", "file", "redis", "memcached"]


@pytest.fixture(autouse=True, params=BACKENDS)
def cache_factory(request, key_prefix, tmp_path):
    url = os.environ.get(f"UNICACHE_CACHELIB_{request.param.upper()}")
    if not url:
        pytest.skip(f"UNICACHE_CACHELIB_{request.param.upper()} not set")
    made = []

    def _factory(self, *args, **kwargs):
        kwargs.setdefault("key_prefix", key_prefix)
        c = UnicacheCache(url, *args, **kwargs)
        c.clear()
        made.append(c)
        return c

    def _bounded(self, threshold):
        """A cache with a threshold on a store of its own: SQLite keeps the
        bound in the file, which the other tests share."""
        if request.param in ("redis", "memcached"):
            pytest.skip(f"{request.param} refuses a threshold: the server's memory limit bounds it")
        fresh = {
            "memory": "memory://",
            "sqlite": f"sqlite:{tmp_path}/bounded-{uuid.uuid4().hex}.sqlite3",
            "file": f"file:{tmp_path}/bounded-{uuid.uuid4().hex}.jsonl",
        }[request.param]
        c = UnicacheCache(fresh, key_prefix=key_prefix, threshold=threshold)
        made.append(c)
        return c

    request.cls.cache_factory = _factory
    request.cls.bounded_cache = _bounded
    yield
    for c in made:
        c.cache.close()


class TestUnicacheCache(
    CommonTests, ClearTests, HasTests, DeleteManyWithPrefixTests, SerializerTests
):
    # cachelib's own threshold tests (tests/test_simple_cache.py and
    # test_file_system_cache.py), reading the store's count where they read
    # SimpleCache._cache and FileSystemCache._file_count.
    def test_threshold(self):
        threshold = len(self.sample_pairs) // 2
        cache = self.bounded_cache(threshold)
        assert cache.set_many(self.sample_pairs)
        assert abs(len(cache.cache) - threshold) <= 1
        cache = self.bounded_cache(0)  # FileSystemCache: no threshold
        assert cache.set_many(self.sample_pairs)
        assert len(cache.cache) == len(self.sample_pairs)

    def test_prune_old_entries(self):
        threshold = 2 * len(self.sample_pairs) - 1
        cache = self.bounded_cache(threshold)
        for k, v in self.sample_pairs.items():
            assert cache.set(f"{k}-t1", v, timeout=1)
            assert cache.set(f"{k}-t5", v, timeout=5)
        time.sleep(2)
        for k, v in self.sample_pairs.items():
            assert cache.set(k, v)
            assert cache.has(f"{k}-t5")
            assert not cache.has(f"{k}-t1")

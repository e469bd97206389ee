"""cachelib's own generic test classes (its source's tests/common.py,
clear.py, has.py, delete_many_with_prefix.py, serializer.py) against
unicache.cachelib.UnicacheCache, per backend. Copied beside those files
as test_unicache_suite.py and run with pytest by ../test_cachelib_suite.py (not
collected here: it imports cachelib's test modules); the URLs come from the
environment (UNICACHE_CACHELIB_<BACKEND>)."""

import os

import pytest
from clear import ClearTests
from common import CommonTests
from delete_many_with_prefix import DeleteManyWithPrefixTests
from has import HasTests
from serializer import SerializerTests

from unicache.cachelib import UnicacheCache

BACKENDS = ["memory", "sqlite", "file", "redis", "memcached"]


@pytest.fixture(autouse=True, params=BACKENDS)
def cache_factory(request, key_prefix):
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

    request.cls.cache_factory = _factory
    yield
    for c in made:
        c.cache.close()


class TestUnicacheCache(
    CommonTests, ClearTests, HasTests, DeleteManyWithPrefixTests, SerializerTests
):
    pass

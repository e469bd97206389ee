"""Django's own generic cache tests (BaseCacheTests, from Django's source
tests/cache/tests.py) against unicache_rs.django.UnicacheCache, one class per
backend. Copied into that folder and run with Django's runtests.py by
../test_django_suite.py; the URLs come from the environment."""

import os

from django.test import TestCase, override_settings

import unicache_rs

from .tests import BaseCacheTests, caches_setting_for_tests

# Redis and memcached are bounded by the server (maxmemory, memcached -m):
# MAX_ENTRIES is refused there, so their "cull" caches are left out and
# the culling tests skipped (below), as for Django's own Redis and
# memcached backends. Memory, SQLite and the file log cull as LocMemCache
# and DatabaseCache do, and run them.
UNCULLED = {"cull", "zero_cull"}


def caches_for(url, culls):
    return caches_setting_for_tests(
        BACKEND="unicache_rs.django.UnicacheCache",
        LOCATION=url,
        exclude=None if culls else UNCULLED,
    )


class UnicacheTests(BaseCacheTests):
    # incr of a pickled value: unicache_rs.django.IncrTypeError, a TypeError.
    incr_decr_type_error = TypeError


def suite_for(name, env, culls=True):
    url = os.environ.get(env)

    @override_settings(CACHES=caches_for(url or "memory://", culls))
    class Tests(UnicacheTests, TestCase):
        def setUp(self):
            if not url:
                self.skipTest(f"{env} not set")
            super().setUp()

        if not culls:

            def test_cull(self):
                self.skipTest(
                    "no MAX_ENTRIES on Redis or memcached: the server's memory limit bounds it"
                )

            test_zero_cull = test_cull_delete_when_store_empty = test_cull

    Tests.__name__ = Tests.__qualname__ = name
    return Tests


UnicacheMemoryTests = suite_for("UnicacheMemoryTests", "UNICACHE_DJANGO_MEMORY")
UnicacheSqliteTests = suite_for("UnicacheSqliteTests", "UNICACHE_DJANGO_SQLITE")
UnicacheFileTests = suite_for("UnicacheFileTests", "UNICACHE_DJANGO_FILE")
UnicacheRedisTests = suite_for("UnicacheRedisTests", "UNICACHE_DJANGO_REDIS", culls=False)
UnicacheMemcachedTests = suite_for(
    "UnicacheMemcachedTests", "UNICACHE_DJANGO_MEMCACHED", culls=False
)
assert unicache_rs.Cache

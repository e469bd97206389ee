"""Django's own generic cache tests (BaseCacheTests, from Django's source
tests/cache/tests.py) against unicache.django.UnicacheCache, one class per
backend. Copied into that folder and run with Django's runtests.py by
../test_django_suite.py; the URLs come from the environment."""

import os

from django.test import TestCase, override_settings

import unicache

from .tests import BaseCacheTests, caches_setting_for_tests

# Like Django's Redis and memcached backends: no culling (MAX_ENTRIES) tests.
EXCLUDED = {"cull", "zero_cull"}


def caches_for(url):
    return caches_setting_for_tests(
        BACKEND="unicache.django.UnicacheCache", LOCATION=url, exclude=EXCLUDED
    )


class UnicacheTests(BaseCacheTests):
    # incr of a pickled value: unicache.django.IncrTypeError, a TypeError.
    incr_decr_type_error = TypeError


def suite_for(name, env):
    url = os.environ.get(env)

    @override_settings(CACHES=caches_for(url or "memory://"))
    class Tests(UnicacheTests, TestCase):
        def setUp(self):
            if not url:
                self.skipTest(f"{env} not set")
            super().setUp()

    Tests.__name__ = Tests.__qualname__ = name
    return Tests


UnicacheMemoryTests = suite_for("UnicacheMemoryTests", "UNICACHE_DJANGO_MEMORY")
UnicacheSqliteTests = suite_for("UnicacheSqliteTests", "UNICACHE_DJANGO_SQLITE")
UnicacheFileTests = suite_for("UnicacheFileTests", "UNICACHE_DJANGO_FILE")
UnicacheRedisTests = suite_for("UnicacheRedisTests", "UNICACHE_DJANGO_REDIS")
UnicacheMemcachedTests = suite_for("UnicacheMemcachedTests", "UNICACHE_DJANGO_MEMCACHED")
assert unicache.Cache

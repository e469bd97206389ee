"""dogpile.cache's own backend and mutex test suites (shipped in
dogpile.testing.fixtures) against the "unicache" entry point, per backend."""

import uuid

import pytest

pytest.importorskip("dogpile.cache")

from dogpile.testing.fixtures import (  # noqa: E402
    _GenericBackendTestSuite,
    _GenericMutexTestSuite,
)


class _Unicache:
    backend = "unicache"
    store = "memory"
    config_args = {"arguments": {"url": "memory://"}}

    @pytest.fixture(autouse=True)
    def _store(self, request, tmp_path_factory):
        if self.store == "memory":
            url = "memory://"
        elif self.store in ("sqlite", "file"):
            d = tmp_path_factory.mktemp("dogpile")
            url = f"{self.store}:{d}/store"
        else:
            url = request.getfixturevalue(f"{self.store}_server").url
        args = {"url": url, "namespace": f"dp{uuid.uuid4().hex[:8]}", "lock_sleep": 0.005}
        # Per test: the suite builds its regions and backends from config_args.
        type(self).config_args = {"arguments": args}
        yield


def _suites(store):
    name = store.capitalize()
    backend = type(f"Test{name}Backend", (_Unicache, _GenericBackendTestSuite), {"store": store})
    mutex = type(f"Test{name}Mutex", (_Unicache, _GenericMutexTestSuite), {"store": store})
    return backend, mutex


TestMemoryBackend, TestMemoryMutex = _suites("memory")
TestSqliteBackend, TestSqliteMutex = _suites("sqlite")
TestFileBackend, TestFileMutex = _suites("file")
TestRedisBackend, TestRedisMutex = _suites("redis")
TestMemcachedBackend, TestMemcachedMutex = _suites("memcached")

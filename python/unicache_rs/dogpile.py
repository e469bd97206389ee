"""dogpile.cache backend, registered as ``unicache`` (entry point).

::

    from dogpile.cache import make_region
    region = make_region().configure(
        "unicache",
        expiration_time=300,
        arguments={"url": "redis://127.0.0.1:6379", "namespace": "app"},
    )

Arguments: ``url`` (a unicache URL, default ``memory://``), ``namespace``,
``expiration_time`` (seconds the store keeps entries, like the Redis
backend's ``redis_expiration_time``; default: forever; dogpile's own
``expiration_time`` on the region is separate), ``distributed_lock``
(default ``True``: the dogpile mutex is a key taken with the atomic
``add``, shared by every process on the store), ``lock_timeout`` (seconds
a taken lock lives if its holder dies; default 30) and ``lock_sleep``
(seconds between tries while waiting; default 0.05).
"""

from __future__ import annotations

import time
import uuid

from dogpile.cache.api import NO_VALUE, BytesBackend, CacheMutex

import unicache_rs

__all__ = ["UnicacheBackend", "UnicacheMutex"]


class UnicacheMutex(CacheMutex):
    """dogpile's mutex as a cache key taken with ``add`` (atomic on every backend)."""

    def __init__(self, cache: unicache_rs.Cache, key: str, timeout: float, sleep: float):
        self.cache = cache
        self.key = key
        self.timeout = timeout
        self.sleep = sleep
        self.token = uuid.uuid4().hex

    def acquire(self, wait: bool = True) -> bool:
        while True:
            if self.cache.add(self.key, self.token, self.timeout):
                return True
            if not wait:
                return False
            time.sleep(self.sleep)

    def release(self) -> None:
        # Only our own lock: one that expired and was taken again is not ours.
        if self.cache.get(self.key) == self.token.encode():
            self.cache.delete(self.key)

    def locked(self) -> bool:
        return self.key in self.cache


class UnicacheBackend(BytesBackend):
    """A dogpile.cache backend over any unicache URL."""

    def __init__(self, arguments):
        arguments = dict(arguments)
        self.url = arguments.get("url", "memory://")
        self.namespace = arguments.get("namespace")
        self.expiration_time = arguments.get("expiration_time")
        self.distributed_lock = arguments.get("distributed_lock", True)
        self.lock_timeout = arguments.get("lock_timeout", 30)
        self.lock_sleep = arguments.get("lock_sleep", 0.05)
        self.cache = unicache_rs.Cache(self.url, namespace=self.namespace)

    def get_mutex(self, key):
        if not self.distributed_lock:
            return None
        return UnicacheMutex(self.cache, f"_lock{key}", self.lock_timeout, self.lock_sleep)

    def get_serialized(self, key):
        value = self.cache.get(key)
        return NO_VALUE if value is None else value

    def get_serialized_multi(self, keys):
        keys = list(keys)
        found = self.cache.get_many(keys)
        return [found.get(k, NO_VALUE) for k in keys]

    def set_serialized(self, key, value):
        self.cache.set(key, value, self.expiration_time)

    def set_serialized_multi(self, mapping):
        if mapping:
            self.cache.set_many(mapping, self.expiration_time)

    def delete(self, key):
        self.cache.delete(key)

    def delete_multi(self, keys):
        keys = list(keys)
        if keys:
            self.cache.delete_many(keys)

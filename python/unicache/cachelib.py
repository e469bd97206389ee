"""cachelib (Flask-Caching's base) backend: ``unicache.cachelib.UnicacheCache``.

::

    from unicache.cachelib import UnicacheCache
    cache = UnicacheCache("redis://127.0.0.1:6379", default_timeout=300, key_prefix="app:")

cachelib's semantics: ``timeout=None`` uses ``default_timeout``, ``0`` never
expires; ``key_prefix`` is a string or a callable returning one; values go
through ``serializer`` (assignable; by default cachelib's Redis serializer:
integers as decimal text so ``inc``/``dec`` are atomic on the server,
everything else pickled).
"""

from __future__ import annotations

import typing as _t

from cachelib.base import BaseCache
from cachelib.serializers import RedisSerializer

import unicache

__all__ = ["UnicacheCache"]


class UnicacheCache(BaseCache):
    """A ``cachelib.BaseCache`` over a unicache URL or an open :class:`unicache.Cache`."""

    serializer = RedisSerializer()

    def __init__(
        self,
        url: str | unicache.Cache = "memory://",
        default_timeout: int = 300,
        key_prefix: str | _t.Callable[[], str] | None = None,
        namespace: str | None = None,
    ):
        super().__init__(default_timeout)
        self.cache = url if isinstance(url, unicache.Cache) else unicache.Cache(url, namespace=namespace)
        self.key_prefix = key_prefix or ""

    def _key(self, key: str) -> str:
        prefix = self.key_prefix() if callable(self.key_prefix) else self.key_prefix
        return f"{prefix}{key}"

    def _ttl(self, timeout) -> float | None:
        t = self._normalize_timeout(timeout)
        return None if t == 0 else t

    def get(self, key: str) -> _t.Any:
        data = self.cache.get(self._key(key))
        return None if data is None else self.serializer.loads(data)

    def get_many(self, *keys: str) -> list[_t.Any]:
        made = [self._key(k) for k in keys]
        found = self.cache.get_many(made)
        return [self.serializer.loads(found[k]) if k in found else None for k in made]

    def set(self, key: str, value: _t.Any, timeout: int | None = None) -> bool:
        ttl = self._normalize_timeout(timeout)
        if ttl < 0:
            self.cache.delete(self._key(key))
            return True
        self.cache.set(self._key(key), self.serializer.dumps(value), ttl or None)
        return True

    def add(self, key: str, value: _t.Any, timeout: int | None = None) -> bool:
        ttl = self._normalize_timeout(timeout)
        return self.cache.add(self._key(key), self.serializer.dumps(value), ttl or None)

    def set_many(self, mapping: dict[str, _t.Any], timeout: int | None = None) -> list[_t.Any]:
        ttl = self._normalize_timeout(timeout)
        entries = {self._key(k): self.serializer.dumps(v) for k, v in mapping.items()}
        if entries:
            self.cache.set_many(entries, ttl or None)
        return list(mapping)

    def delete(self, key: str) -> bool:
        return self.cache.delete(self._key(key))

    def delete_many(self, *keys: str) -> list[_t.Any]:
        if keys:
            self.cache.delete_many([self._key(k) for k in keys])
        # Keys that did not exist count as deleted, as in cachelib's Redis cache.
        return list(keys)

    def has(self, key: str) -> bool:
        return self._key(key) in self.cache

    def clear(self) -> bool:
        self.cache.clear()
        return True

    def inc(self, key: str, delta: int = 1) -> int | None:
        return self.cache.incr(self._key(key), delta)

    def dec(self, key: str, delta: int = 1) -> int | None:
        return self.cache.incr(self._key(key), -delta)

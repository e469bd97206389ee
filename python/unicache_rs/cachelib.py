"""cachelib (Flask-Caching's base) backend: ``unicache_rs.cachelib.UnicacheCache``.

::

    from unicache_rs.cachelib import UnicacheCache
    cache = UnicacheCache("redis://127.0.0.1:6379", default_timeout=300, key_prefix="app:")

cachelib's semantics: ``timeout=None`` uses ``default_timeout``, ``0`` never
expires; ``key_prefix`` is a string or a callable returning one; values go
through ``serializer`` (assignable; by default cachelib's Redis serializer:
integers as decimal text so ``inc``/``dec`` are atomic on the server,
everything else pickled); ``ignore_delete_many_errors=False`` makes
``delete_many`` raise ``RuntimeError`` naming the keys that failed.
``clear()`` with a ``key_prefix`` deletes that prefix's keys (see
:meth:`UnicacheCache.clear`).

``threshold`` (as cachelib's ``SimpleCache`` and ``FileSystemCache``):
on SQLite it is the store's own ``max_entries`` bound, the file's, kept by
every process and client that writes it (the store evicts to stay within
it: README, "Bounded disk caches"). On ``memory://`` (whose own capacity,
default 100,000, is kept per shard and so would evict early), on the file
log (which keeps no bounds yet) and on an open :class:`unicache_rs.Cache`
passed in, entries are pruned here as cachelib prunes them: before a value
is stored, when more than ``threshold`` are there, the first ones
``keys()`` lists are deleted down to ``threshold`` (so at most
``threshold + 1``, as in cachelib). Redis and memcached refuse it
(``UnsupportedError``: bound the server, ``maxmemory``, ``memcached -m``).
``None`` (the default) and ``0`` (``FileSystemCache``'s "no limit") set
no bound, unlike cachelib's default of 500: a unicache store is often
shared by other processes and tools, and a bound that evicts their
entries is asked for, never assumed.
"""

from __future__ import annotations

import typing as _t

from cachelib.base import BaseCache
from cachelib.serializers import RedisSerializer

import unicache_rs

from . import _bounds

__all__ = ["UnicacheCache"]

# Keys per delete_many call when clear() deletes a key_prefix's keys.
_CLEAR_CHUNK = 1000


class UnicacheCache(BaseCache):
    """A ``cachelib.BaseCache`` over a unicache URL or an open :class:`unicache_rs.Cache`."""

    serializer = RedisSerializer()

    def __init__(
        self,
        url: str | unicache_rs.Cache = "memory://",
        default_timeout: int = 300,
        key_prefix: str | _t.Callable[[], str] | None = None,
        namespace: str | None = None,
        ignore_delete_many_errors: bool = True,
        threshold: int | None = None,
    ):
        try:
            super().__init__(default_timeout, ignore_delete_many_errors=ignore_delete_many_errors)
        except TypeError:  # cachelib before 0.14 has no such argument
            super().__init__(default_timeout)
            self.ignore_delete_many_errors = ignore_delete_many_errors
        if threshold is not None and (
            not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 0
        ):
            raise ValueError(f"threshold must be an int, 0 or more, not {threshold!r}")
        self._threshold = threshold or None
        if isinstance(url, unicache_rs.Cache):
            self.cache, bound = url, None
        else:
            bound = _bounds.store_bound(url, self._threshold)
            self.cache = unicache_rs.Cache(url, namespace=namespace, max_entries=bound)
        # Pruned here only where the store does not keep the bound itself.
        self._prunes = self._threshold is not None and bound is None
        self.key_prefix = key_prefix or ""

    def _key(self, key: str) -> str:
        prefix = self.key_prefix() if callable(self.key_prefix) else self.key_prefix
        return f"{prefix}{key}"

    def _ttl(self, timeout) -> float | None:
        t = self._normalize_timeout(timeout)
        return None if t == 0 else t

    def _prune(self, adding: int) -> None:
        """cachelib's prune before storing ``adding`` entries: when more
        than ``threshold`` are there, deletes down to ``threshold`` (so at
        most ``threshold + 1`` after a ``set``, as in cachelib's caches)."""
        if self._prunes:
            _bounds.delete_some(self.cache, len(self.cache) + adding - 1 - self._threshold)

    def _store(self, entries: dict[str, bytes], ttl) -> None:
        if not self._prunes:
            self.cache.set_many(entries, ttl)
            return
        # As that many set() calls: in runs that one prune makes room for.
        items = list(entries.items())
        for i in range(0, len(items), self._threshold):
            run = dict(items[i : i + self._threshold])
            self._prune(len(run))
            self.cache.set_many(run, ttl)

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
        self._prune(1)
        self.cache.set(self._key(key), self.serializer.dumps(value), ttl or None)
        return True

    def add(self, key: str, value: _t.Any, timeout: int | None = None) -> bool:
        ttl = self._normalize_timeout(timeout)
        self._prune(1)
        return self.cache.add(self._key(key), self.serializer.dumps(value), ttl or None)

    def set_many(self, mapping: dict[str, _t.Any], timeout: int | None = None) -> list[_t.Any]:
        ttl = self._normalize_timeout(timeout)
        entries = {self._key(k): self.serializer.dumps(v) for k, v in mapping.items()}
        if entries:
            self._store(entries, ttl or None)
        return list(mapping)

    def delete(self, key: str) -> bool:
        return self.cache.delete(self._key(key))

    def delete_many(self, *keys: str) -> list[_t.Any]:
        made = [self._key(k) for k in keys]
        try:
            if made:
                self.cache.delete_many(made)
        except unicache_rs.PartialBatchError as e:
            failed = set(e.keys)
            if not self.ignore_delete_many_errors:
                names = [k for k, m in zip(keys, made) if m in failed]
                raise RuntimeError(f"Failed to delete keys: {names}") from e
            return [k for k, m in zip(keys, made) if m not in failed]
        # Keys that did not exist count as deleted, as in cachelib's Redis cache.
        return list(keys)

    def has(self, key: str) -> bool:
        return self._key(key) in self.cache

    def clear(self) -> bool:
        """With a ``key_prefix``: deletes the keys that start with it (as
        cachelib's Redis cache does), where the backend lists keys. Else the
        namespace's entries (the whole store for memory, SQLite and file);
        without a namespace, Redis and memcached are flushed whole
        (``FLUSHDB``, ``flush_all``), as cachelib's own caches do."""
        prefix = self.key_prefix() if callable(self.key_prefix) else self.key_prefix
        if prefix:
            try:
                keys = [k for k in self.cache.keys() if k.startswith(prefix)]
            except unicache_rs.UnsupportedError:
                keys = None  # memcached cannot list keys: cachelib flushes it too
            if keys is not None:
                for i in range(0, len(keys), _CLEAR_CHUNK):
                    self.cache.delete_many(keys[i : i + _CLEAR_CHUNK])
                return True
        try:
            self.cache.clear()
        except unicache_rs.UnsupportedError:
            # Redis or memcached without a namespace.
            self.cache.clear_all()
        return True

    def inc(self, key: str, delta: int = 1) -> int | None:
        return self.cache.incr(self._key(key), delta)

    def dec(self, key: str, delta: int = 1) -> int | None:
        return self.cache.incr(self._key(key), -delta)

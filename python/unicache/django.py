"""Django cache backend: ``unicache.django.UnicacheCache``.

::

    CACHES = {
        "default": {
            "BACKEND": "unicache.django.UnicacheCache",
            "LOCATION": "redis://127.0.0.1:6379?namespace=site",
            "TIMEOUT": 300,
            "OPTIONS": {"namespace": "site"},   # optional; overrides the URL's
        }
    }

``TIMEOUT``, ``KEY_PREFIX``, ``VERSION`` and ``KEY_FUNCTION`` mean what they
mean for Django's own backends (``None`` keeps forever, ``0`` or less does not
keep). Values are pickled as Django's Redis backend does, except integers,
which are stored as decimal text so ``incr``/``decr`` are one atomic server
operation. The URL's ``ttl`` option is not used: ``TIMEOUT`` is.

Every ``UnicacheCache`` with the same ``LOCATION`` and namespace shares one
unicache handle in the process (Django makes one backend object per thread),
so a ``memory://`` cache is one store for all threads, like ``LocMemCache``
with one ``LOCATION``. ``close()`` keeps that handle open, like Django's
Redis backend. ``clear()`` removes the namespace's entries; without a
namespace, Redis and memcached caches are flushed whole (``FLUSHDB``,
``flush_all``), as Django's own Redis and memcached backends do.

``OPTIONS`` takes ``namespace``, and on ``memory://`` ``MAX_ENTRIES`` (the
cache's capacity: at most that many entries, the least useful evicted one
at a time) and ``CULL_FREQUENCY`` (accepted; eviction is per entry, so it
changes nothing). Any other key, or ``MAX_ENTRIES``/``CULL_FREQUENCY`` on
another backend, is an ``ImproperlyConfigured`` error naming it: a bound
that is silently dropped lets a ported ``LocMemCache`` or
``FileBasedCache`` setting grow without one. SQLite and file bounds are
not there yet; Redis and memcached are bounded by the server's memory limit.
"""

import pickle
import threading

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured

import unicache

__all__ = ["UnicacheCache"]

_handles = {}
_handles_lock = threading.Lock()


def _shared(location, namespace):
    key = (location, namespace)
    with _handles_lock:
        cache = _handles.get(key)
        if cache is None:
            cache = unicache.Cache(location, namespace=namespace)
            _handles[key] = cache
        return cache


def _configure(location, params):
    """``(location, namespace)`` from ``LOCATION`` and ``OPTIONS``; any
    option this backend cannot honour is an ``ImproperlyConfigured`` error
    naming it (a silently dropped bound would let the cache grow unbounded)."""
    options = dict(params.get("OPTIONS") or {})
    namespace = options.pop("namespace", None)
    max_entries = options.pop("MAX_ENTRIES", None)
    cull = options.pop("CULL_FREQUENCY", None)
    if options:
        raise ImproperlyConfigured(
            f"unicache.django.UnicacheCache: unknown OPTIONS {', '.join(map(repr, sorted(options)))}"
            " (known: 'namespace', and 'MAX_ENTRIES', 'CULL_FREQUENCY' on memory://)"
        )
    memory = location.startswith("memory:")
    for name, value in (("MAX_ENTRIES", max_entries), ("CULL_FREQUENCY", cull)):
        if value is not None and not memory:
            raise ImproperlyConfigured(
                f"unicache.django.UnicacheCache: OPTIONS {name!r} is not supported on "
                f"{location.split(':', 1)[0]} caches yet (only memory:// keeps a bound); "
                "remove it: Redis and memcached evict by the server's own memory limit"
            )
    if max_entries is not None:
        try:
            n = int(max_entries)
        except (TypeError, ValueError):
            n = 0
        if n <= 0:
            raise ImproperlyConfigured(
                f"unicache.django.UnicacheCache: OPTIONS 'MAX_ENTRIES' must be a positive "
                f"integer, not {max_entries!r}"
            )
        if "capacity=" in location:
            raise ImproperlyConfigured(
                "unicache.django.UnicacheCache: OPTIONS 'MAX_ENTRIES' and the LOCATION's "
                "capacity both bound the cache: keep one"
            )
        location += ("&" if "?" in location else "?") + f"capacity={n}"
    return location, namespace


class IncrTypeError(unicache.InvalidInputError, TypeError):
    """``incr``/``decr`` of a value that is not an integer."""


class UnicacheCache(BaseCache):
    """A Django cache over any unicache URL (``LOCATION``)."""

    pickle_protocol = pickle.HIGHEST_PROTOCOL

    def __init__(self, server, params):
        super().__init__(params)
        if isinstance(server, (list, tuple)):
            server = server[0] if len(server) == 1 else ",".join(server)
        self._location, self._namespace = _configure(server or "memory://", params)
        self._cache = None

    @property
    def unicache(self):
        """The :class:`unicache.Cache` behind this backend (opened on first use)."""
        if self._cache is None:
            self._cache = _shared(self._location, self._namespace)
        return self._cache

    # Values: integers as decimal text (atomic incr), the rest pickled.
    def _dumps(self, value):
        if type(value) is int:
            return str(value).encode()
        return pickle.dumps(value, self.pickle_protocol)

    def _loads(self, data):
        try:
            return int(data)
        except ValueError:
            return pickle.loads(data)

    def get_backend_timeout(self, timeout=DEFAULT_TIMEOUT):
        """Seconds to keep (``None``: forever; ``0``: do not keep)."""
        if timeout == DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        return None if timeout is None else max(0, timeout)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version=version)
        timeout = self.get_backend_timeout(timeout)
        data = self._dumps(value)
        if timeout == 0:
            # Django: stored, so True when absent, but not kept.
            if self.unicache.add(key, data, 1):
                self.unicache.delete(key)
                return True
            return False
        return self.unicache.add(key, data, timeout)

    def get(self, key, default=None, version=None):
        key = self.make_and_validate_key(key, version=version)
        data = self.unicache.get(key)
        return default if data is None else self._loads(data)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version=version)
        timeout = self.get_backend_timeout(timeout)
        if timeout == 0:
            self.unicache.delete(key)
        else:
            self.unicache.set(key, self._dumps(value), timeout)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version=version)
        timeout = self.get_backend_timeout(timeout)
        if timeout == 0:
            return self.unicache.delete(key)
        if timeout is None:
            # touch(None) means the cache's default TTL; this handle has none.
            data = self.unicache.get(key)
            if data is None:
                return False
            self.unicache.set(key, data, None)
            return True
        return self.unicache.touch(key, timeout)

    def delete(self, key, version=None):
        key = self.make_and_validate_key(key, version=version)
        return self.unicache.delete(key)

    def has_key(self, key, version=None):
        key = self.make_and_validate_key(key, version=version)
        return key in self.unicache

    def get_many(self, keys, version=None):
        made = {self.make_and_validate_key(k, version=version): k for k in keys}
        if not made:
            return {}
        found = self.unicache.get_many(list(made))
        return {made[k]: self._loads(v) for k, v in found.items()}

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        if not data:
            return []
        timeout = self.get_backend_timeout(timeout)
        entries = {
            self.make_and_validate_key(k, version=version): self._dumps(v)
            for k, v in data.items()
        }
        if timeout == 0:
            self.unicache.delete_many(list(entries))
        else:
            self.unicache.set_many(entries, timeout)
        return []

    def delete_many(self, keys, version=None):
        made = [self.make_and_validate_key(k, version=version) for k in keys]
        if made:
            self.unicache.delete_many(made)

    def incr(self, key, delta=1, version=None):
        key = self.make_and_validate_key(key, version=version)
        if key not in self.unicache:
            raise ValueError("Key '%s' not found." % key)
        try:
            return self.unicache.incr(key, delta)
        except unicache.InvalidInputError as e:
            raise IncrTypeError(str(e)) from None

    def clear(self):
        backend = self.unicache.backend_name
        if self._namespace is None and "namespace=" not in self._location and backend in (
            "redis", "redis-cluster", "memcached"
        ):
            self.unicache.clear_all()
        else:
            self.unicache.clear()

    def close(self, **kwargs):
        # The shared handle stays open for the next request.
        pass

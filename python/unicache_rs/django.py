"""Django cache backend: ``unicache_rs.django.UnicacheCache``.

::

    CACHES = {
        "default": {
            "BACKEND": "unicache_rs.django.UnicacheCache",
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

Every ``UnicacheCache`` with the same ``LOCATION`` and namespace (and, on
SQLite, ``MAX_ENTRIES``) shares one unicache handle in the process (Django
makes one backend object per thread), so a ``memory://`` cache is one store
for all threads and aliases, like ``LocMemCache`` with one ``LOCATION``.
``close()`` keeps that handle open, like Django's Redis backend.
``clear()`` removes the namespace's entries; without a namespace, Redis and
memcached caches are flushed whole (``FLUSHDB``, ``flush_all``), as
Django's own Redis and memcached backends do.

``OPTIONS`` takes ``namespace``, and on ``memory://``, ``sqlite:`` and
``file:`` ``MAX_ENTRIES`` and ``CULL_FREQUENCY``, meaning what they mean
for ``LocMemCache`` and ``DatabaseCache``: before a value is stored, when
the cache holds ``MAX_ENTRIES`` entries or more, ``count // CULL_FREQUENCY``
of them are deleted (all of them when ``CULL_FREQUENCY`` is 0). Either
option turns culling on, with Django's default for the other
(``MAX_ENTRIES`` 300, ``CULL_FREQUENCY`` 3).

- The culled entries are the first ones ``keys()`` lists: by key on SQLite
  and the file log (as ``DatabaseCache``), in the map's order on memory.
- The count costs what it costs ``DatabaseCache``, on every ``set`` and
  ``add``: a ``COUNT`` on SQLite, a pass over the entries on ``memory://``
  once any has a TTL. ``set_many`` culls as that many ``set`` calls would,
  counting once per run of keys that fits before the next cull.
- On SQLite ``MAX_ENTRIES`` is also the store's own ``max_entries`` bound,
  so that no other process or client grows it past that: the bound is the
  file's (README, "Bounded disk caches"), kept by whoever writes it, so
  aliases and programs that share the file share its bound.
- On ``memory://`` and the file log (which keeps no bounds yet) the culling
  alone keeps ``MAX_ENTRIES``. ``memory://`` keeps its own capacity
  (default 100,000; ``capacity=`` in the ``LOCATION``) per shard: give it
  room above ``MAX_ENTRIES`` (twice) or it evicts before the cull point.

Without either, nothing is culled and the store gets no bound (the
LOCATION's own, such as ``sqlite:PATH?max_bytes=500MB``, apply): unlike
Django's 300-entry default for ``LocMemCache`` and ``DatabaseCache``. A
unicache store is often shared (one SQLite file for several processes and
tools, whose bound is the file's), so a default of 300 would silently evict
other clients' data and replace the bound the file had, and counting costs
a query per write; a bound is asked for, as everywhere in unicache.

Any other ``OPTIONS`` key, or ``MAX_ENTRIES``/``CULL_FREQUENCY`` on Redis or
memcached (bounded by the server's own memory limit: ``maxmemory``,
``memcached -m``), is an ``ImproperlyConfigured`` error naming it: a bound
that is silently dropped lets a ported ``LocMemCache`` or
``FileBasedCache`` setting grow without one.
"""

import pickle
import threading
from urllib.parse import parse_qs

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured

import unicache_rs

from . import _bounds

__all__ = ["UnicacheCache"]

_handles = {}
_handles_lock = threading.Lock()

_DEFAULT_MAX_ENTRIES = 300  # Django's defaults, when culling is asked for
_DEFAULT_CULL_FREQUENCY = 3


def _shared(location, namespace, max_entries):
    """The process's handle on ``location`` and ``namespace`` opened with
    ``max_entries`` as the store's own bound (``None``: none)."""
    key = (location, namespace, max_entries)
    with _handles_lock:
        cache = _handles.get(key)
        if cache is None:
            cache = unicache_rs.Cache(location, namespace=namespace, max_entries=max_entries)
            _handles[key] = cache
        return cache


def _int_option(name, value, least):
    """``value`` as an int of at least ``least``, else ``ImproperlyConfigured``."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = None
    if n is None or isinstance(value, bool) or n < least:
        what = "a positive integer" if least > 0 else "an integer, 0 or more"
        raise ImproperlyConfigured(
            f"unicache_rs.django.UnicacheCache: OPTIONS {name!r} must be {what}, not {value!r}"
        )
    return n


def _configure(location, params):
    """``(location, namespace, max_entries, cull_frequency)`` from
    ``LOCATION`` and ``OPTIONS``; ``max_entries`` is ``None`` when nothing
    is culled. Any option this backend cannot honour is an
    ``ImproperlyConfigured`` error naming it (a silently dropped bound
    would let the cache grow unbounded)."""
    options = dict(params.get("OPTIONS") or {})
    namespace = options.pop("namespace", None)
    max_entries = options.pop("MAX_ENTRIES", None)
    cull = options.pop("CULL_FREQUENCY", None)
    if options:
        raise ImproperlyConfigured(
            f"unicache_rs.django.UnicacheCache: unknown OPTIONS {', '.join(map(repr, sorted(options)))}"
            " (known: 'namespace', and 'MAX_ENTRIES', 'CULL_FREQUENCY' on memory://, sqlite:, file:)"
        )
    if max_entries is None and cull is None:
        return location, namespace, None, None
    scheme = _bounds.scheme(location)
    if scheme not in _bounds.CULLABLE:
        name = "MAX_ENTRIES" if max_entries is not None else "CULL_FREQUENCY"
        raise ImproperlyConfigured(
            f"unicache_rs.django.UnicacheCache: OPTIONS {name!r} is not supported on "
            f"{scheme} caches (only memory://, sqlite: and file: are culled); "
            "remove it: Redis and memcached evict by the server's own memory limit"
        )
    n = _DEFAULT_MAX_ENTRIES if max_entries is None else _int_option("MAX_ENTRIES", max_entries, 1)
    every = _DEFAULT_CULL_FREQUENCY if cull is None else _int_option("CULL_FREQUENCY", cull, 0)
    if "max_entries" in parse_qs(location.partition("?")[2]):
        raise ImproperlyConfigured(
            "unicache_rs.django.UnicacheCache: OPTIONS 'MAX_ENTRIES' (or 'CULL_FREQUENCY', which "
            f"culls at MAX_ENTRIES, default {_DEFAULT_MAX_ENTRIES}) and the LOCATION's "
            "max_entries both bound the cache: keep one"
        )
    return location, namespace, n, every


class IncrTypeError(unicache_rs.InvalidInputError, TypeError):
    """``incr``/``decr`` of a value that is not an integer."""


class UnicacheCache(BaseCache):
    """A Django cache over any unicache URL (``LOCATION``)."""

    pickle_protocol = pickle.HIGHEST_PROTOCOL

    def __init__(self, server, params):
        super().__init__(params)
        if isinstance(server, (list, tuple)):
            server = server[0] if len(server) == 1 else ",".join(server)
        self._location, self._namespace, max_entries, cull = _configure(
            server or "memory://", params
        )
        # Django's BaseCache set these with its defaults; ours say whether
        # this backend culls at all. The store's bound is fixed here (Django's
        # tests change _max_entries on a live backend).
        self._culls = max_entries is not None
        if self._culls:
            self._max_entries, self._cull_frequency = max_entries, cull
        self._store_bound = _bounds.store_bound(self._location, max_entries)
        self._cache = None

    @property
    def unicache(self):
        """The :class:`unicache_rs.Cache` behind this backend (opened on first use)."""
        if self._cache is None:
            self._cache = _shared(self._location, self._namespace, self._store_bound)
        return self._cache

    def _room(self):
        """Django's cull, before storing (``LocMemCache``,
        ``DatabaseCache``): when the cache holds ``MAX_ENTRIES`` entries or
        more, deletes ``count // CULL_FREQUENCY`` of them (all when 0).
        Returns how many new entries fit before the next cull is due."""
        n = len(self.unicache)
        if n < self._max_entries:
            return self._max_entries - n
        if self._cull_frequency == 0:
            self.unicache.clear()
            n = 0
        else:
            n -= _bounds.delete_some(self.unicache, n // self._cull_frequency)
        # Still full (count // CULL_FREQUENCY was 0, or others wrote
        # meanwhile): Django stores one and culls again at the next.
        return max(1, self._max_entries - n)

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
        if self._culls:
            self._room()
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
            if self._culls:
                self._room()
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
        elif not self._culls:
            self.unicache.set_many(entries, timeout)
        else:
            # As Django's set() per key, in batches: a batch no larger than
            # the room left meets no cull point on the way.
            items = list(entries.items())
            i = 0
            while i < len(items):
                room = self._room()
                self.unicache.set_many(dict(items[i : i + room]), timeout)
                i += room
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
        except unicache_rs.InvalidInputError as e:
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

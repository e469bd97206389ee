"""The helpers of :class:`unicache_rs.Cache` and :class:`unicache_rs.AsyncCache`
written in Python over the extension's methods: ``lock`` (over the
library's lock), ``memoize`` and ``expire`` (``persist`` and ``compress=``
are the extension's, native in the library)."""

import functools
import hashlib
import inspect
import pickle

from ._unicache import Cache as _RustCache
from ._unicache import Lock as _RustLock
from .errors import Error, InvalidInputError

__all__ = ["Lock", "AsyncLock", "LockError", "LockNotOwnedError"]


class Cache(_RustCache):
    """A cache opened from a URL (``memory://``, ``sqlite:PATH``,
    ``file:PATH``, ``redis://HOST:PORT``, ``redis+cluster://...``,
    ``memcached://HOST:PORT``); see the extension's ``Cache`` for the
    methods. ``compress="zstd"`` (or ``"zlib"``) compresses values of
    ``compress_min_size`` bytes or more (default 1024) before they are
    stored, marked so that reads of uncompressed values still work: the
    library's compression layer (the URL's ``compress=``), the same bytes
    as a Rust program's.
    """

    def __init__(self, *args, **kwargs):
        pass  # all done in __new__

    def __repr__(self):
        return f"unicache_rs.Cache({self.url!r})"

    def expire(self, key, ttl):
        """Gives ``key`` a new TTL of ``ttl`` seconds (or a timedelta);
        ``True`` when the key was there."""
        if ttl is None:
            raise InvalidInputError("expire(key, ttl): ttl is required (persist() removes it)")
        return self.touch(key, ttl)

    def lock(self, name, timeout=None, blocking_timeout=None):
        """A :class:`Lock` named ``name`` (see there); ``with cache.lock("job", timeout=30):``."""
        return Lock(self, name, timeout=timeout, blocking_timeout=blocking_timeout)

    def memoize(self, ttl=None, *, prefix=None):
        """Decorator: caches a function's pickled result under a key made of
        its qualified name (or ``prefix``) and a hash of its pickled
        arguments, through :meth:`get_or_set` (one run per key among
        concurrent callers). Works on plain and ``async def`` functions
        (these through an :class:`AsyncCache` over this same handle).
        The wrapper has ``cache_key(*args, **kwargs)`` and
        ``invalidate(*args, **kwargs)``."""
        return _memoize(self, ttl, prefix)

    @property
    def aio(self):
        """An :class:`AsyncCache` over this same handle."""
        from .aio import AsyncCache

        return AsyncCache._over(self)


def open_sync(url, namespace, default_ttl, options):
    """The :class:`Cache` behind an ``AsyncCache``."""
    return Cache(url, namespace, default_ttl, **options)


# ---------------------------------------------------------------- locks

# The library's lock (unicache::Lock, python/src/lock.rs): one implementation
# for Rust and Python, the same key and format.
_LOCK_PREFIX = "__unicache_lock:"


class LockError(Error):
    """A lock that could not be taken (``blocking_timeout`` passed) or used."""


class LockNotOwnedError(LockError):
    """``release()`` or ``extend()`` of a lock this holder does not hold
    (never taken, released, or expired and taken by another)."""


class _LockBase:
    def __init__(self, cache, name, timeout, blocking_timeout):
        if not isinstance(name, str) or not name:
            raise InvalidInputError("a lock's name must be a non-empty str")
        self._cache = cache.sync if hasattr(cache, "sync") else cache
        self.name = name
        self.key = _LOCK_PREFIX + name
        self.timeout = timeout
        self.blocking_timeout = blocking_timeout
        self._lock = _RustLock(self._cache, name, timeout)

    @property
    def token(self):
        """This holder's token (bytes) while it holds the lock, else ``None``."""
        return self._lock.token

    def _wait(self, blocking, blocking_timeout):
        if self.token is not None:
            raise LockError(f"lock {self.name!r} is already held by this Lock object")
        if not blocking:
            return 0
        return self.blocking_timeout if blocking_timeout is None else blocking_timeout

    def _not_owned(self):
        return LockNotOwnedError(f"lock {self.name!r} is not held by this holder")

    def __repr__(self):
        state = "held" if self.token else "not held"
        return f"<{type(self).__name__} {self.name!r} {state}>"


class Lock(_LockBase):
    """A lock across threads and processes sharing the cache:
    ``with cache.lock(name, timeout=30, blocking_timeout=5): ...``; the
    library's ``unicache::Lock``.

    The key ``__unicache_lock:<name>`` is taken with ``add`` (atomic on
    every backend) holding a token of this holder, with ``timeout`` seconds
    to live (``None``: the cache's default TTL, or never), so a holder that
    dies frees it then. Waiters poll with capped exponential backoff and
    jitter (5 ms to 100 ms, as the read-through leases do) until
    ``blocking_timeout`` seconds (``None``: forever) and then raise
    :class:`LockError`. ``release()`` and ``extend()`` compare the token
    atomically (``compare_and_set``): only the holder releases or extends,
    and one whose lock expired and was taken by another gets
    :class:`LockNotOwnedError`.
    """

    def acquire(self, blocking=True, blocking_timeout=None):
        """Takes the lock; ``False`` when not blocking (or the timeout
        passed) and it is held elsewhere."""
        return self._lock.acquire(self._wait(blocking, blocking_timeout))

    def release(self):
        """Frees the lock; :class:`LockNotOwnedError` if this holder does not hold it."""
        if not self._lock.release():
            raise self._not_owned()

    def extend(self, timeout):
        """Gives the held lock ``timeout`` more seconds from now."""
        if not self._lock.extend(timeout):
            raise self._not_owned()

    def locked(self):
        """Whether anyone holds the lock now."""
        return self._lock.locked()

    def __enter__(self):
        if not self.acquire():
            raise LockError(
                f"lock {self.name!r} not acquired within {self.blocking_timeout} s"
            )
        return self

    def __exit__(self, *exc):
        self.release()
        return False


class AsyncLock(_LockBase):
    """:class:`Lock` for asyncio: ``async with acache.lock(name, timeout=30):``;
    the same lock, so it excludes blocking :class:`Lock` holders too."""

    async def acquire(self, blocking=True, blocking_timeout=None):
        from .aio import _call

        wait = self._wait(blocking, blocking_timeout)
        return await _call(self._cache, "lock_acquire", self._lock, wait)

    async def release(self):
        from .aio import _call

        if not await _call(self._cache, "lock_release", self._lock):
            raise self._not_owned()

    async def extend(self, timeout):
        from .aio import _call

        if not await _call(self._cache, "lock_extend", self._lock, timeout):
            raise self._not_owned()

    async def locked(self):
        from .aio import _call

        return await _call(self._cache, "lock_locked", self._lock)

    async def __aenter__(self):
        if not await self.acquire():
            raise LockError(
                f"lock {self.name!r} not acquired within {self.blocking_timeout} s"
            )
        return self

    async def __aexit__(self, *exc):
        await self.release()
        return False


# ---------------------------------------------------------------- memoize


def _memoize(cache, ttl, prefix):
    def decorate(fn):
        base = prefix if prefix is not None else f"memoize:{fn.__module__}.{fn.__qualname__}"

        def cache_key(*args, **kwargs):
            try:
                payload = pickle.dumps((args, sorted(kwargs.items())), protocol=4)
            except Exception as e:
                raise TypeError(f"memoize: the arguments of {fn.__qualname__} must pickle: {e}") from e
            return f"{base}:{hashlib.blake2b(payload, digest_size=16).hexdigest()}"

        if inspect.iscoroutinefunction(fn):
            aio = cache if not isinstance(cache, _RustCache) else cache.aio

            @functools.wraps(fn)
            async def wrapper(*args, **kwargs):
                async def produce():
                    return pickle.dumps(await fn(*args, **kwargs), protocol=4)

                raw = await aio.get_or_set(cache_key(*args, **kwargs), produce, ttl)
                return pickle.loads(raw)

            async def invalidate(*args, **kwargs):
                return await aio.delete(cache_key(*args, **kwargs))

        else:
            sync = cache.sync if not isinstance(cache, _RustCache) else cache

            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                raw = sync.get_or_set(
                    cache_key(*args, **kwargs),
                    lambda: pickle.dumps(fn(*args, **kwargs), protocol=4),
                    ttl,
                )
                return pickle.loads(raw)

            def invalidate(*args, **kwargs):
                return sync.delete(cache_key(*args, **kwargs))

        wrapper.cache_key = cache_key
        wrapper.invalidate = invalidate
        return wrapper

    return decorate


class AsyncHelpers:
    """``lock``, ``memoize`` and ``expire`` of ``AsyncCache``."""

    async def expire(self, key, ttl):
        """Gives ``key`` a new TTL; ``True`` when the key was there."""
        if ttl is None:
            raise InvalidInputError("expire(key, ttl): ttl is required (persist() removes it)")
        return await self.touch(key, ttl)

    def lock(self, name, timeout=None, blocking_timeout=None):
        """An :class:`AsyncLock`: ``async with acache.lock("job", timeout=30):``."""
        return AsyncLock(self, name, timeout=timeout, blocking_timeout=blocking_timeout)

    def memoize(self, ttl=None, *, prefix=None):
        """:meth:`Cache.memoize` (plain and ``async def`` functions)."""
        return _memoize(self, ttl, prefix)

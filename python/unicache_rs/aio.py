"""``unicache_rs.AsyncCache``: the methods of :class:`unicache_rs.Cache` as
native asyncio coroutines.

A call starts the Rust future on the extension's runtime and awaits an
asyncio future that the runtime completes on the event loop
(``loop.call_soon_threadsafe``) when the backend answers: no Python thread
waits for the backend, so thousands of calls can be in flight at once.
Cancelling the awaiting task (``asyncio.wait_for``, ``task.cancel()``)
aborts that call's Rust future.
"""

import asyncio
import contextvars
import functools
import inspect
import weakref

from ._helpers import AsyncHelpers
from ._unicache import Bridge

__all__ = ["AsyncCache"]


# Each event loop's bridge (python/src/aio.rs): the runtime queues finished
# calls there and wakes the loop through a socket it watches. The bridge
# holds no reference to its loop, so a closed loop and its bridge go away.
_bridges = weakref.WeakKeyDictionary()
_last = (None, None)  # the last loop and its bridge: one dict lookup saved per call


def _bridge(loop):
    global _last
    last = _last  # one read: another thread's loop may replace it
    if last[0] is loop:
        return last[1]
    bridge = _bridges.get(loop)
    if bridge is None:
        bridge = Bridge()
        try:
            loop.add_reader(bridge.fileno(), bridge.drain)
        except NotImplementedError:  # a loop that cannot watch sockets
            bridge.use_call_soon(loop.call_soon_threadsafe, bridge.drain)
        _bridges[loop] = bridge
    _last = (loop, bridge)
    return bridge


async def _call(cache, op, *args):
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    task = cache._aio(_bridge(loop), fut, op, *args)
    try:
        return await fut
    except asyncio.CancelledError:
        task.cancel()
        raise


class AsyncCache(AsyncHelpers):
    """``AsyncCache(url, namespace=None, default_ttl=None, *, max_bytes=None,
    max_entries=None, max_age=None, compress=None, compress_min_size=1024)``
    (as :class:`unicache_rs.Cache`); also ``async with``.

    ``keys()`` returns a list; ``contains(key)`` and ``len()`` stand for
    ``in`` and ``len()``. ``get_or_set``'s factory may be a plain callable or
    a coroutine function (see :meth:`get_or_set`).
    """

    def __init__(self, url, namespace=None, default_ttl=None, **options):
        from . import _helpers

        self._cache = _helpers.open_sync(url, namespace, default_ttl, options)
        self._flights = {}

    @classmethod
    async def open(cls, url, namespace=None, default_ttl=None, **options):
        """Opens without blocking the event loop (network backends connect)."""
        from . import _helpers

        self = cls.__new__(cls)
        self._cache = await asyncio.to_thread(
            _helpers.open_sync, url, namespace, default_ttl, options
        )
        self._flights = {}
        return self

    @classmethod
    def _over(cls, cache):
        """An ``AsyncCache`` over an open :class:`unicache_rs.Cache`."""
        self = cls.__new__(cls)
        self._cache = cache
        self._flights = {}
        return self

    @property
    def sync(self):
        """The blocking :class:`unicache_rs.Cache` behind this one."""
        return self._cache

    def __repr__(self):
        return f"unicache_rs.AsyncCache({self._cache.url!r})"

    async def get(self, key, default=None):
        """The value under ``key`` as bytes, or ``default``."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        cache = self._cache
        task = cache._aio(_bridge(loop), fut, "get", key)
        try:
            value = await fut
        except asyncio.CancelledError:
            task.cancel()
            raise
        if value is None:
            return default
        return value

    async def set(self, key, value, ttl=None):
        """Stores ``value`` (bytes or str) under ``key``."""
        await _call(self._cache, "set", key, value, ttl)

    async def add(self, key, value, ttl=None):
        """Stores only when ``key`` is absent, atomically; ``True`` when it stored."""
        return await _call(self._cache, "add", key, value, ttl)

    async def compare_and_set(self, key, expected, new, ttl=None):
        """Stores ``new`` only if the live value is exactly ``expected``,
        atomically; ``True`` when it stored."""
        return await _call(self._cache, "compare_and_set", key, expected, new, ttl)

    async def delete(self, key):
        """Removes ``key``; ``True`` if it was there."""
        return await _call(self._cache, "delete", key)

    async def incr(self, key, delta=1):
        """Adds ``delta`` to the integer under ``key``, atomically."""
        return await _call(self._cache, "incr", key, delta)

    async def decr(self, key, delta=1):
        """``incr(key, -delta)``."""
        return await _call(self._cache, "incr", key, -delta)

    async def touch(self, key, ttl=None):
        """Gives ``key`` a new TTL (``None``: the default); ``True`` when it was there."""
        return await _call(self._cache, "touch", key, ttl)

    async def persist(self, key):
        """Removes ``key``'s TTL, whatever the default TTL; ``True`` when it was there."""
        return await _call(self._cache, "persist", key)

    async def ttl(self, key):
        """Seconds left: ``None`` absent, ``math.inf`` never expires."""
        return await _call(self._cache, "ttl", key)

    async def get_with_ttl(self, key):
        """``(value, seconds left)`` or ``None``; one round trip."""
        got = await _call(self._cache, "get_with_ttl", key)
        if got is None:
            return None
        return got[0], got[1]

    async def contains(self, key):
        """Whether ``key`` is present (``key in cache``)."""
        return await _call(self._cache, "contains", key)

    async def len(self):
        """The number of entries (``len(cache)``)."""
        return await _call(self._cache, "len")

    async def get_many(self, keys):
        """A dict of the keys present among ``keys``; one round trip."""
        return await _call(self._cache, "get_many", keys)

    async def set_many(self, entries, ttl=None):
        """Stores every entry of a mapping or iterable of pairs."""
        await _call(self._cache, "set_many", entries, ttl)

    async def delete_many(self, keys):
        """Removes ``keys``; returns how many were there."""
        return await _call(self._cache, "delete_many", keys)

    async def delete_prefix(self, prefix):
        """Removes the namespace's keys starting with ``prefix``; returns how many."""
        return await _call(self._cache, "delete_prefix", prefix)

    async def clear(self):
        """Removes every entry of this namespace."""
        await _call(self._cache, "clear")

    async def clear_all(self):
        """Removes everything in the store, every namespace."""
        await _call(self._cache, "clear_all")

    async def stats(self):
        """Counters and the backend's own figures, as a dict."""
        return await _call(self._cache, "stats")

    async def keys(self):
        """The namespace's live keys, as a list."""
        return await _call(self._cache, "keys")

    async def close(self):
        """Flushes and releases the cache; later calls raise ``ClosedError``."""
        await _call(self._cache, "close")

    async def get_or_set(self, key, factory, ttl=None):
        """The value under ``key``, or ``factory()``'s, stored with ``ttl``.

        ``factory`` is a coroutine function or a plain callable (run in a
        worker thread, ``asyncio.to_thread``). One run per key among the
        concurrent callers in this event loop, and the cache's blocking
        callers in other threads (:meth:`unicache_rs.Cache.get_or_set`) join
        the same run: the single-flight is the Rust engine's. The factory
        runs as a task on the loop, in the first caller's context
        (``contextvars``). Its exception reaches every caller and nothing is
        stored. A caller cancelled (``asyncio.wait_for``) while others still
        wait just leaves: the factory goes on for them and its value is
        stored. When the last waiting caller is cancelled, the factory's
        task is cancelled and nothing is stored.
        """
        value = await self.get(key)
        if value is not None:
            return value
        loop = asyncio.get_running_loop()
        flights = self._flights.setdefault(loop, {})
        flight = flights.get(key)
        if flight is None:
            flight = _Flight(loop, self._cache, key, factory, ttl)
            flights[key] = flight
            flight.done.add_done_callback(lambda _: _forget(flights, key, flight))
        flight.callers += 1
        try:
            value = await asyncio.shield(flight.done)
        finally:
            flight.callers -= 1
            if flight.callers == 0 and not flight.done.done():
                # Every caller was cancelled: no one wants the value.
                _forget(flights, key, flight)
                flight.cancel()
        return value

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
        return False


async def _run_plain(factory):
    """A plain factory, in a worker thread; an awaitable it returns (a
    callable object with an ``async def __call__``) is awaited here."""
    result = await asyncio.to_thread(factory)
    if inspect.isawaitable(result):
        result = await result
    return result


def _forget(flights, key, flight):
    if flights.get(key) is flight:
        del flights[key]


class _Flight:
    """One ``get_or_set`` run for one key in one event loop: one Rust call
    into the engine's single-flight, awaited by every caller of the key in
    this loop. When the engine picks this call to fill the key, it calls
    ``start`` on the loop, which runs the factory as a task; the task's
    outcome goes back to the engine through ``send``."""

    def __init__(self, loop, cache, key, factory, ttl):
        self.callers = 0
        self.done = loop.create_future()
        self._task = None  # the factory's task, once started
        self._cancelled = False
        context = contextvars.copy_context()

        def start(send):
            if self._cancelled:
                send(False, asyncio.CancelledError())
                return
            try:
                if inspect.iscoroutinefunction(factory):
                    make = factory
                else:
                    make = functools.partial(_run_plain, factory)
                # Created inside the first caller's context: the task runs in a copy of it.
                self._task = context.run(lambda: loop.create_task(make()))
            except BaseException as e:  # noqa: BLE001 - handed to the engine
                send(False, e)
                return

            def finished(task):
                if task.cancelled():
                    send(False, asyncio.CancelledError())
                elif task.exception() is not None:
                    send(False, task.exception())
                else:
                    try:
                        send(True, task.result())
                    except BaseException as e:  # noqa: BLE001 - a bad value
                        send(False, e)

            self._task.add_done_callback(finished)

        self._rust = cache._aio(_bridge(loop), self.done, "get_or_set", key, ttl, start, loop)

    def cancel(self):
        """Cancels the factory's task and the Rust call: nothing is stored."""
        self._cancelled = True
        self._rust.cancel()
        if self._task is not None:
            self._task.cancel()
        if not self.done.done():
            self.done.cancel()

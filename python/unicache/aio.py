"""``unicache.AsyncCache``: the methods of :class:`unicache.Cache` as
coroutines for asyncio.

Each call runs the blocking method in a worker thread (the GIL is released
while the backend works, so calls overlap); the event loop never blocks.
"""

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import threading
import weakref

from ._unicache import Cache

__all__ = ["AsyncCache"]

_METHODS = (
    "get", "set", "add", "delete", "incr", "decr", "touch", "ttl", "get_with_ttl",
    "contains", "get_many", "set_many", "delete_many", "clear", "clear_all",
    "stats", "keys", "get_or_set", "close", "len",
)


class AsyncCache:
    """``AsyncCache(url, namespace=None, default_ttl=None, *, max_bytes=None,
    max_entries=None, max_age=None)`` (as :class:`unicache.Cache`); also
    ``async with``.

    ``keys()`` returns a list; ``contains(key)`` and ``len()`` stand for
    ``in`` and ``len()``. ``get_or_set``'s factory may be a plain callable or
    a coroutine function (see :meth:`get_or_set`).
    """

    def __init__(self, url, namespace=None, default_ttl=None, **bounds):
        self._cache = Cache(url, namespace=namespace, default_ttl=default_ttl, **bounds)
        self._flights = weakref.WeakKeyDictionary()

    @classmethod
    async def open(cls, url, namespace=None, default_ttl=None, **bounds):
        """Opens without blocking the event loop (network backends connect)."""
        self = cls.__new__(cls)
        self._cache = await asyncio.to_thread(
            Cache, url, namespace=namespace, default_ttl=default_ttl, **bounds
        )
        self._flights = weakref.WeakKeyDictionary()
        return self

    @property
    def sync(self):
        """The blocking :class:`unicache.Cache` behind this one."""
        return self._cache

    def __repr__(self):
        return f"unicache.AsyncCache({self._cache.url!r})"

    async def contains(self, key):
        return await asyncio.to_thread(self._cache.__contains__, key)

    async def len(self):
        return await asyncio.to_thread(self._cache.__len__)

    async def keys(self):
        return await asyncio.to_thread(lambda: list(self._cache.keys()))

    async def get_or_set(self, key, factory, ttl=None):
        """The value under ``key``, or ``factory()``'s, stored with ``ttl``.

        ``factory`` is a coroutine function or a plain callable (run in a
        thread). Concurrent callers of one key in this event loop, and the
        cache's blocking callers in other threads, share one factory run
        (:meth:`unicache.Cache.get_or_set`'s single-flight); it runs in the
        first caller's context (``contextvars``). Its exception reaches them
        all and nothing is stored. A caller cancelled (``asyncio.wait_for``)
        while others still wait just leaves: the factory goes on for them
        and its value is stored. When every caller waiting in this loop has
        been cancelled, a coroutine factory is cancelled, a plain one's value
        is dropped, and nothing is stored; a blocking caller still waiting
        then runs its own factory.
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
            return await asyncio.shield(flight.done)
        finally:
            flight.callers -= 1
            if flight.callers == 0 and not flight.done.done():
                # Every caller was cancelled: no one wants the value.
                _forget(flights, key, flight)
                flight.cancel()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
        return False


def _forget(flights, key, flight):
    if flights.get(key) is flight:
        del flights[key]


class _Flight:
    """One factory run for one key in one event loop.

    The single-flight itself is the Rust engine's
    (:meth:`unicache.Cache.get_or_set`, so blocking callers in other
    threads join it too), called from a thread of the flight's own, in the
    first caller's context: a plain factory runs there, a coroutine is
    scheduled on the loop and waited for. A dedicated thread, not the
    loop's executor: a factory that awaits other cache calls needs the
    executor's threads while this one waits.
    """

    def __init__(self, loop, cache, key, factory, ttl):
        self._lock = threading.Lock()
        self._running = None  # the coroutine's concurrent.futures.Future
        self._cancelled = False
        self.callers = 0
        self.done = loop.create_future()  # the engine's answer, set from the thread
        coroutine = inspect.iscoroutinefunction(factory)

        def produce():
            with self._lock:
                if self._cancelled:
                    raise asyncio.CancelledError
                if coroutine:
                    self._running = asyncio.run_coroutine_threadsafe(factory(), loop)
            if not coroutine:
                value = factory()
                with self._lock:
                    if self._cancelled:
                        raise asyncio.CancelledError  # no caller left: not stored
                return value
            try:
                return self._running.result()
            except concurrent.futures.CancelledError:
                # Not an Exception: the engine hands the flight over to a
                # waiter instead of failing them all.
                raise asyncio.CancelledError from None

        def work():
            try:
                result, error = cache.get_or_set(key, produce, ttl), None
            except BaseException as e:  # noqa: BLE001 - handed to the loop
                result, error = None, e
            try:
                loop.call_soon_threadsafe(_settle, self.done, result, error)
            except RuntimeError:
                pass  # the loop is closed: no one waits

        context = contextvars.copy_context()
        threading.Thread(
            target=context.run, args=(work,), name="unicache-aio-flight", daemon=True
        ).start()

    def cancel(self):
        """Cancels the coroutine (or its start) and drops a plain factory's
        value: nothing is stored."""
        with self._lock:
            self._cancelled = True
            running = self._running
        if running is not None:
            running.cancel()
        self.done.cancel()


def _settle(done, result, error):
    if done.done():
        return
    if isinstance(error, asyncio.CancelledError):
        done.cancel()
    elif error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)


def _forward(name):
    method = getattr(Cache, name)

    @functools.wraps(method)
    async def call(self, *args, **kwargs):
        return await asyncio.to_thread(getattr(self._cache, name), *args, **kwargs)

    return call


for _name in _METHODS:
    if _name not in AsyncCache.__dict__:
        setattr(AsyncCache, _name, _forward(_name))

"""``unicache.AsyncCache``: the methods of :class:`unicache.Cache` as
coroutines for asyncio.

Each call runs the blocking method in a worker thread (the GIL is released
while the backend works, so calls overlap); the event loop never blocks.
"""

import asyncio
import functools
import inspect

from ._unicache import Cache

__all__ = ["AsyncCache"]

_METHODS = (
    "get", "set", "add", "delete", "incr", "decr", "touch", "ttl", "get_with_ttl",
    "contains", "get_many", "set_many", "delete_many", "clear", "clear_all",
    "stats", "keys", "get_or_set", "close", "len",
)


class AsyncCache:
    """``AsyncCache(url, namespace=None, default_ttl=None)``; also ``async with``.

    ``keys()`` returns a list; ``contains(key)`` and ``len()`` stand for
    ``in`` and ``len()``. ``get_or_set``'s factory may be a plain callable or
    a coroutine function.
    """

    def __init__(self, url, namespace=None, default_ttl=None):
        self._cache = Cache(url, namespace=namespace, default_ttl=default_ttl)

    @classmethod
    async def open(cls, url, namespace=None, default_ttl=None):
        """Opens without blocking the event loop (network backends connect)."""
        self = cls.__new__(cls)
        self._cache = await asyncio.to_thread(
            Cache, url, namespace=namespace, default_ttl=default_ttl
        )
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
        value = await self.get(key)
        if value is not None:
            return value
        if inspect.iscoroutinefunction(factory):
            made = await factory()
            # add: a concurrent caller's value wins; everyone returns it.
            if not await self.add(key, made, ttl):
                stored = await self.get(key)
                if stored is not None:
                    return stored
            return made if isinstance(made, bytes) else str(made).encode()
        return await asyncio.to_thread(self._cache.get_or_set, key, factory, ttl)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
        return False


def _forward(name):
    method = getattr(Cache, name)

    @functools.wraps(method)
    async def call(self, *args, **kwargs):
        return await asyncio.to_thread(getattr(self._cache, name), *args, **kwargs)

    return call


for _name in _METHODS:
    if _name not in AsyncCache.__dict__:
        setattr(AsyncCache, _name, _forward(_name))

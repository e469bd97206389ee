import datetime
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol, TypeVar, overload

from typing_extensions import ParamSpec

from . import _unicache
from .aio import AsyncCache
from .errors import Error

_T = TypeVar("_T")
_P = ParamSpec("_P")
Value = bytes | bytearray | memoryview | str
Seconds = int | float | datetime.timedelta

class Cache(_unicache.Cache):
    """A cache opened from a URL; ``compress="zstd"``/``"zlib"`` compresses
    values of ``compress_min_size`` bytes or more."""

    def __new__(
        cls,
        url: str,
        namespace: str | None = None,
        default_ttl: Seconds | None = None,
        *,
        compress: str | None = None,
        compress_min_size: int = 1024,
        max_bytes: int | str | None = None,
        max_entries: int | None = None,
        max_age: Seconds | str | None = None,
    ) -> Cache: ...
    def __init__(
        self,
        url: str,
        namespace: str | None = None,
        default_ttl: Seconds | None = None,
        *,
        compress: str | None = None,
        compress_min_size: int = 1024,
        max_bytes: int | str | None = None,
        max_entries: int | None = None,
        max_age: Seconds | str | None = None,
    ) -> None: ...
    def __enter__(self) -> Cache: ...
    def expire(self, key: str, ttl: Seconds) -> bool: ...
    def lock(
        self, name: str, timeout: Seconds | None = None, blocking_timeout: float | None = None
    ) -> Lock: ...
    def memoize(
        self, ttl: Seconds | None = None, *, prefix: str | None = None
    ) -> _Memoizer: ...
    @property
    def aio(self) -> AsyncCache: ...

class _Memoizer:
    @overload
    def __call__(self, fn: Callable[_P, Awaitable[_T]]) -> _AsyncMemoized[_P, _T]: ...
    @overload
    def __call__(self, fn: Callable[_P, _T]) -> _Memoized[_P, _T]: ...

class _Memoized(Protocol[_P, _T]):
    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _T: ...
    def cache_key(self, *args: _P.args, **kwargs: _P.kwargs) -> str: ...
    def invalidate(self, *args: _P.args, **kwargs: _P.kwargs) -> bool: ...

class _AsyncMemoized(Protocol[_P, _T]):
    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> Awaitable[_T]: ...
    def cache_key(self, *args: _P.args, **kwargs: _P.kwargs) -> str: ...
    def invalidate(self, *args: _P.args, **kwargs: _P.kwargs) -> Awaitable[bool]: ...

class LockError(Error): ...
class LockNotOwnedError(LockError): ...

class Lock:
    name: str
    key: str
    timeout: Seconds | None
    blocking_timeout: float | None
    @property
    def token(self) -> bytes | None: ...
    def __init__(
        self,
        cache: _unicache.Cache,
        name: str,
        timeout: Seconds | None = None,
        blocking_timeout: float | None = None,
    ) -> None: ...
    def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool: ...
    def release(self) -> None: ...
    def extend(self, timeout: Seconds) -> None: ...
    def locked(self) -> bool: ...
    def __enter__(self) -> Lock: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

class AsyncLock:
    name: str
    key: str
    timeout: Seconds | None
    blocking_timeout: float | None
    @property
    def token(self) -> bytes | None: ...
    def __init__(
        self,
        cache: AsyncCache,
        name: str,
        timeout: Seconds | None = None,
        blocking_timeout: float | None = None,
    ) -> None: ...
    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool: ...
    async def release(self) -> None: ...
    async def extend(self, timeout: Seconds) -> None: ...
    async def locked(self) -> bool: ...
    async def __aenter__(self) -> AsyncLock: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

class AsyncHelpers:
    async def expire(self, key: str, ttl: Seconds) -> bool: ...
    def lock(
        self, name: str, timeout: Seconds | None = None, blocking_timeout: float | None = None
    ) -> AsyncLock: ...
    def memoize(
        self, ttl: Seconds | None = None, *, prefix: str | None = None
    ) -> _Memoizer: ...

def open_sync(
    url: str, namespace: str | None, default_ttl: Seconds | None, options: Mapping[str, Any]
) -> Cache: ...

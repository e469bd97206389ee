"""unicache_rs: one cache interface over memory, SQLite, a file log, Redis and
memcached, with a compiled Rust core.

>>> import unicache
>>> with unicache_rs.Cache("memory://") as c:
...     c.set("k", "v")
...     c.get("k")
b'v'
"""

import os as _os

from ._helpers import AsyncLock, Cache, Lock, LockError, LockNotOwnedError
from ._unicache import _after_fork, _before_fork, write
from .aio import AsyncCache
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors
from .seed import WriteResult, create_cache, run, write_to_caches

__all__ = [
    "Cache",
    "AsyncCache",
    "Lock",
    "AsyncLock",
    "LockError",
    "LockNotOwnedError",
    "write",
    "create_cache",
    "write_to_caches",
    "run",
    "WriteResult",
    *_errors,
]
__version__ = "0.1.0"

if hasattr(_os, "register_at_fork"):
    # SQLite's upkeep threads stay out of SQLite while a fork happens: a
    # mutex of SQLite held by one of them would stay held in the child.
    _os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
    )

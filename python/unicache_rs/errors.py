"""Exceptions raised by unicache.

Every one is a :class:`Error` carrying the Rust library's one-line message
(passwords redacted); most also derive from the matching built-in exception,
so ``except ConnectionError`` or ``except ValueError`` code keeps working.
"""

import builtins
import types
from collections.abc import Mapping
from typing import Any

__all__ = [
    "Error",
    "InvalidUrlError",
    "UnsupportedError",
    "InvalidInputError",
    "ValueTooLargeError",
    "IoError",
    "NotFoundError",
    "CorruptError",
    "ConnectionError",
    "TimeoutError",
    "BackendError",
    "SerializationError",
    "PartialBatchError",
    "ClosedError",
    "WriteError",
]


class Error(Exception):
    """Base class of every unicache error."""


class InvalidUrlError(Error, ValueError):
    """The cache URL does not parse, names an unknown backend or has a bad option."""


class UnsupportedError(Error, NotImplementedError):
    """The backend cannot do this operation (e.g. ``keys()`` on memcached)."""


class InvalidInputError(Error, ValueError):
    """An argument is not acceptable (zero TTL, non-integer for ``incr``...)."""


class ValueTooLargeError(Error, ValueError):
    """The value exceeds what the backend stores."""


class IoError(Error, OSError):
    """A local I/O error (file, directory, disk full)."""


class NotFoundError(Error, FileNotFoundError):
    """A store or input file does not exist."""


class CorruptError(Error):
    """Stored data is damaged or not a unicache store."""


class ConnectionError(Error, builtins.ConnectionError):
    """The server could not be reached or the connection dropped (transient)."""


class TimeoutError(Error, builtins.TimeoutError):
    """An operation did not finish in time (transient)."""


class BackendError(Error):
    """The server answered something unexpected or reported an error."""


class SerializationError(Error, ValueError):
    """Encoding or decoding a value failed."""


class PartialBatchError(Error):
    """Some entries of a batch (``set_many``, ``get_many``, ``delete_many``)
    failed; the others were done. The message names the first failed keys;
    ``keys`` lists every failed key in batch order and ``failures`` maps
    each to its own exception (a :class:`ValueTooLargeError`...)."""

    keys: "tuple[str, ...] | list[str]" = ()
    failures: "Mapping[str, Error]" = types.MappingProxyType({})


class ClosedError(Error):
    """The cache was closed."""


class WriteError(Error):
    """``unicache_rs.write`` stopped early; ``summary`` holds what it did."""

    summary: "dict[str, Any] | None" = None

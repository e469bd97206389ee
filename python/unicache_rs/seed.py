"""The original unified cache writer's interface, on unicache.

``create_cache``, ``write_to_caches`` and ``run`` keep the seed program's
signatures, return values and summary format, so its users change only the
import line. The caches are unicache_rs caches: the backend names ``memory``,
``file`` and ``sqlite`` (plus ``redis``, ``memcached`` and any cache URL).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from ._unicache import Cache, path_url_body

__all__ = ["create_cache", "write_to_caches", "run", "WriteResult", "SeedCache"]

# Entries per set_many call in write_to_caches.
_CHUNK = 5000


class SeedCache:
    """The seed's cache interface (``get``/``set``/``delete``/``clear``/
    ``stats``/``close``) with ``str`` values, over a :class:`unicache_rs.Cache`."""

    def __init__(self, backend: str, cache: Cache, tmpdir: str | None = None) -> None:
        self.backend = backend
        self.cache = cache
        if tmpdir is not None:
            # An unnamed SQLite cache lives in a temp dir removed with it.
            self._cleanup = weakref.finalize(self, shutil.rmtree, tmpdir, True)

    def get(self, key: str) -> str | None:
        val = self.cache.get(str(key))
        return None if val is None else val.decode("utf-8", "replace")

    def set(self, key: str, value: str) -> None:
        self.cache.set(str(key), value)

    def delete(self, key: str) -> bool:
        return self.cache.delete(str(key))

    def clear(self) -> None:
        self.cache.clear()

    def stats(self) -> dict:
        s = self.cache.stats()
        size = s.get("entries")
        if size is None:
            size = len(self.cache)
        return {"backend": self.backend, "size": size,
                "hits": s["hits"], "misses": s["misses"]}

    def close(self) -> None:
        self.cache.close()
        cleanup = getattr(self, "_cleanup", None)
        if cleanup is not None:
            cleanup()


# The start of a unicache file log's first line (any format version).
_LOG_HEADER = b'{"unicache":"file-log","version":'


def _seed_entries(path: Path) -> dict | None:
    """The entries of the seed's cache file at ``path`` (one JSON object,
    ``{"key": "value", ...}``), or ``None`` when there is no such file (a
    unicache log, anything else: the file backend judges it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LOG_HEADER))
            if not head or head == _LOG_HEADER[: len(head)]:
                return None
            if not head.lstrip().startswith(b"{"):
                return None
            text = head + f.read()
        entries = json.loads(text.decode("utf-8"))
    except (OSError, ValueError):
        return None
    return entries if isinstance(entries, dict) else None


def _convert_seed_file(path: Path) -> None:
    """Turns the seed's cache file at ``path`` into a unicache file log with
    the same entries, so a seed user's existing cache keeps working (the
    seed's ``FileCache`` wrote the whole store as one JSON object).

    String values are kept as they are, other JSON values as their compact
    JSON text (as ``unicache import`` does), nulls are left out (the seed
    read them as misses). The log is written beside it first and then
    replaces it in one rename; the seed's file is kept as
    ``<name>.seed`` (``.seed.1``... if taken). Two processes opening the
    same seed file for the first time at once may convert it twice; the
    later one finds a log and leaves it alone only if the first finished.
    """
    entries = _seed_entries(path)
    if entries is None:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.converting")
    for leftover in (tmp, tmp.with_name(tmp.name + ".lock")):
        leftover.unlink(missing_ok=True)
    log = Cache(f"file:{path_url_body(str(tmp))}")
    try:
        batch: dict[str, str] = {}
        for key, value in entries.items():
            if value is None:
                continue
            batch[key] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            if len(batch) >= _CHUNK:
                log.set_many(batch)
                batch = {}
        if batch:
            log.set_many(batch)
        log.close()
        if _seed_entries(path) is None:
            return  # converted meanwhile by another process
        backup = path.with_name(path.name + ".seed")
        n = 0
        while True:
            try:
                os.link(path, backup)  # never overwrites a kept file
                break
            except FileExistsError:
                n += 1
                backup = path.with_name(f"{path.name}.seed.{n}")
        os.replace(tmp, path)
    finally:
        log.close()
        for leftover in (tmp, tmp.with_name(tmp.name + ".lock")):
            leftover.unlink(missing_ok=True)
    logging.getLogger("unicache").warning(
        "%s was the seed's cache file: converted to a unicache file log (%d entries); "
        "the original is kept as %s", path, len(entries), backup.name,
    )


def _local(scheme: str, path: Path) -> Cache:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Cache(f"{scheme}:{path_url_body(str(path))}")


def create_cache(backend: str, path: Path | None = None):
    """A cache by the seed's backend name: ``memory``, ``file`` (at ``path``,
    default ``data/cache.json``; a cache file the seed wrote there is
    converted first, see :func:`_convert_seed_file`), ``sqlite`` (at ``path``, else a temporary
    file removed at close), ``redis``/``memcached`` on their local default
    ports, or any unicache URL."""
    if backend == "memory":
        return SeedCache("memory", Cache("memory://"))
    elif backend == "file":
        path = Path(path or Path("data/cache.json"))
        _convert_seed_file(path)
        return SeedCache("file", _local("file", path))
    elif backend == "sqlite":
        if path:
            return SeedCache("sqlite", _local("sqlite", path))
        tmpdir = tempfile.mkdtemp(prefix="unicache-")
        cache = _local("sqlite", Path(tmpdir) / "cache.sqlite3")
        return SeedCache("sqlite", cache, tmpdir)
    elif backend == "redis":
        return SeedCache("redis", Cache("redis://127.0.0.1:6379"))
    elif backend == "memcached":
        return SeedCache("memcached", Cache("memcached://127.0.0.1:11211"))
    elif ":" in backend:
        cache = Cache(backend)
        return SeedCache(cache.backend_name, cache)
    raise ValueError(f"Unknown backend: {backend}")


@dataclass
class WriteResult:
    written: int = 0
    backends_used: list[str] = field(default_factory=list)


def write_to_caches(
    records: list[dict],
    backends: list[str],
    base_path: Path | None = None,
) -> WriteResult:
    """Write all records to each specified backend (the seed's keys and
    values: ``rec.get("key", "")`` and ``json.dumps(rec)``), in batches."""
    result = WriteResult()
    caches = []

    for b in backends:
        bp = (base_path / f"cache_{b}.json") if base_path and b == "file" else None
        caches.append((b, create_cache(b, bp)))
        result.backends_used.append(b)

    try:
        batch: dict[str, str] = {}
        for rec in records:
            key = str(rec.get("key", ""))
            # The seed writes record by record: a later record wins its key.
            batch.pop(key, None)
            batch[key] = json.dumps(rec)
            result.written += 1
            if len(batch) >= _CHUNK:
                for _, cache in caches:
                    cache.cache.set_many(batch)
                batch = {}
        if batch:
            for _, cache in caches:
                cache.cache.set_many(batch)
    finally:
        for _, cache in caches:
            cache.close()

    return result


def run(input_path: Path, output_path: Path) -> dict:
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise FileNotFoundError(f"Input not found: {input_path}")

    config = json.loads(input_path.read_text(encoding="utf-8"))
    records = config.get("records", [])
    backends = config.get("backends", ["memory"])

    result = write_to_caches(records, backends, output_path.parent)

    summary = {
        "records_written": result.written,
        "backends_used": result.backends_used,
    }

    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    logging.info("wrote %d records to %d backends", result.written, len(result.backends_used))
    return summary


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Unified Cache Writer — multi-backend caching")
    parser.add_argument("--input", default="data/sample_input.json")
    parser.add_argument("--output", default="data/output_summary.json")
    return parser.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(message)s")
    args = parse_args()
    summary = run(Path(args.input), Path(args.output))
    print(json.dumps(summary, indent=2))

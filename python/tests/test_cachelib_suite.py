"""Runs cachelib's own test classes (CommonTests, ClearTests, HasTests,
DeleteManyWithPrefixTests, SerializerTests) against
unicache_rs.cachelib.UnicacheCache on memory, SQLite, file, Redis and memcached,
with and without a key_prefix (cachelib's conftest runs both).

cachelib's tests are not in its wheel: the source distribution of the
installed version is downloaded once (pip download) into
target/cachelib-src, and pytest runs our module beside its tests. Its
conftest imports xprocess (used only by fixtures we do not use): a stub
stands in for it. Redis and memcached run without a namespace, on servers of their own,
so clear() without a key_prefix flushes them as cachelib's caches do."""

import os
import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import start_memcached, start_redis

pytest.importorskip("cachelib")

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "target" / "cachelib-src"


def cachelib_tests_dir():
    v = version("cachelib")
    tree = SRC / f"cachelib-{v}"
    if not (tree / "tests" / "common.py").exists():
        SRC.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", f"cachelib=={v}",
             "--no-binary", ":all:", "--no-deps", "-d", str(SRC)],
            check=True, timeout=300,
        )
        sdist = next(SRC.glob(f"cachelib-{v}.tar.gz"))
        with tarfile.open(sdist) as t:
            members = [m for m in t.getmembers() if "/tests/" in m.name]
            t.extractall(SRC, members=members)
    tests = tree / "tests"
    run = tests / "unicache-run"
    run.mkdir(exist_ok=True)
    for name in ["conftest.py", "common.py", "clear.py", "has.py",
                 "delete_many_with_prefix.py", "serializer.py"]:
        shutil.copy(tests / name, run / name)
    (run / "xprocess.py").write_text("class ProcessStarter:\n    pass\n")
    shutil.copy(Path(__file__).parent / "cachelib_suite" / "unicache_suite.py",
                run / "test_unicache_suite.py")
    return run


@pytest.fixture
def own_servers():
    """Servers of this test alone: the suite flushes them."""
    redis, memcached = start_redis(), None
    try:
        memcached = start_memcached()
        yield redis, memcached
    finally:
        redis.stop()
        if memcached is not None:
            memcached.stop()


def test_cachelib_suite(tmp_path, own_servers):
    redis_server, memcached_server = own_servers
    run = cachelib_tests_dir()
    env = dict(os.environ)
    env.update(
        UNICACHE_CACHELIB_MEMORY="memory://",
        UNICACHE_CACHELIB_SQLITE=f"sqlite:{tmp_path}/cachelib.sqlite3",
        UNICACHE_CACHELIB_FILE=f"file:{tmp_path}/cachelib.jsonl",
        UNICACHE_CACHELIB_REDIS=redis_server.url,
        UNICACHE_CACHELIB_MEMCACHED=memcached_server.url,
    )
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         "--rootdir", str(run), "-c", os.devnull, "test_unicache_suite.py"],
        cwd=run, env=env, capture_output=True, text=True, timeout=900,
    )
    out = r.stdout + r.stderr
    print(out[-20000:])
    assert r.returncode == 0, out[-6000:]
    assert " passed" in out and " failed" not in out

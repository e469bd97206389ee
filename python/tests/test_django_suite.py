"""Runs Django's own cache test suite (its generic BaseCacheTests) against
unicache_rs.django.UnicacheCache on memory, SQLite, file, Redis and memcached.

Django's tests are not in its wheel: the source distribution of the
installed Django version is downloaded once (pip download) into
target/django-src and its tests/runtests.py runs our test module."""

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

django = pytest.importorskip("django")

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "target" / "django-src"


def django_tests_dir():
    version = django.get_version()
    tree = SRC / f"django-{version}"
    if not (tree / "tests" / "runtests.py").exists():
        SRC.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", f"django=={version}",
             "--no-binary", ":all:", "--no-deps", "-d", str(SRC)],
            check=True, timeout=300,
        )
        sdist = next(SRC.glob(f"[dD]jango-{version}.tar.gz"))
        with tarfile.open(sdist) as t:
            members = [m for m in t.getmembers() if "/tests/" in m.name or m.name.endswith("/tests")]
            t.extractall(SRC, members=members)
        tree = SRC / f"django-{version}"
    shutil.copy(Path(__file__).parent / "django_suite" / "unicache_tests.py",
                tree / "tests" / "cache" / "unicache_tests.py")
    return tree / "tests"


def test_django_cache_suite(tmp_path, redis_server, memcached_server):
    tests = django_tests_dir()
    env = dict(os.environ)
    env.update(
        UNICACHE_DJANGO_MEMORY="memory://",
        UNICACHE_DJANGO_SQLITE=f"sqlite:{tmp_path}/django.sqlite3",
        UNICACHE_DJANGO_FILE=f"file:{tmp_path}/django.jsonl",
        UNICACHE_DJANGO_REDIS=redis_server.url,
        UNICACHE_DJANGO_MEMCACHED=memcached_server.url,
        PYTHONPATH=str(tests),
    )
    r = subprocess.run(
        [sys.executable, "runtests.py", "cache.unicache_tests", "--parallel", "1", "-v", "1"],
        cwd=tests, env=env, capture_output=True, text=True, timeout=900,
    )
    out = r.stdout + r.stderr
    print(out[-20000:])
    assert r.returncode == 0, out[-6000:]
    assert "Ran " in out

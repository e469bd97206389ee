"""Fixtures: real redis-server and memcached processes on free loopback
ports (started once per session, killed at the end), and a `cache_url`
parameter over every backend."""

import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest

import unicache_rs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


class Server:
    """A server process on 127.0.0.1:port, killed by stop()."""

    def __init__(self, kind, argv_for_port):
        if shutil.which(argv_for_port(0)[0]) is None:
            pytest.skip(f"{argv_for_port(0)[0]} is not installed")
        self.kind = kind
        self.port = free_port()
        self.proc = subprocess.Popen(
            argv_for_port(self.port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port, self.proc, kind)

    @property
    def url(self):
        return f"{self.kind}://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def start_redis():
    return Server(
        "redis",
        lambda p: ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no"],
    )


def start_memcached():
    # memcached refuses to run as root without -u.
    root = ["-u", "root"] if os.geteuid() == 0 else []
    return Server(
        "memcached",
        lambda p: ["memcached", "-l", "127.0.0.1", "-p", str(p), "-U", "0", "-m", "256", "-t", "2",
                   *root],
    )


@pytest.fixture(scope="session")
def redis_server():
    s = start_redis()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def memcached_server():
    s = start_memcached()
    yield s
    s.stop()


BACKENDS = ["memory", "sqlite", "file", "redis", "memcached"]


@pytest.fixture
def make_url(request, tmp_path):
    """Returns url(backend) -> a fresh store's URL (a fresh namespace on the servers)."""

    def url(backend):
        if backend == "memory":
            return "memory://"
        if backend == "sqlite":
            return f"sqlite:{tmp_path}/cache.sqlite3"
        if backend == "file":
            return f"file:{tmp_path}/cache.jsonl"
        server = request.getfixturevalue(f"{backend}_server")
        return f"{server.url}?namespace=t{uuid.uuid4().hex[:12]}"

    return url


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def cache_url(make_url, backend):
    return make_url(backend)


@pytest.fixture
def cache(cache_url):
    c = unicache_rs.Cache(cache_url)
    yield c
    c.close()


DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data", "sample_input.json")

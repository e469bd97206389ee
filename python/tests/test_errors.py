"""Errors are unicache exceptions with the Rust message; the GIL is released."""

import os
import signal
import threading
import time

import pytest

import unicache_rs
from conftest import free_port, start_redis


def test_invalid_url():
    with pytest.raises(unicache_rs.InvalidUrlError, match="unknown backend") as e:
        unicache_rs.Cache("nope://x")
    assert isinstance(e.value, ValueError) and isinstance(e.value, unicache_rs.Error)
    with pytest.raises(unicache_rs.InvalidUrlError, match="bogus"):
        unicache_rs.Cache("memory://?bogus=1")


def test_connection_refused_names_endpoint_not_password():
    port = free_port()
    with pytest.raises(unicache_rs.ConnectionError) as e:
        unicache_rs.Cache(f"redis://:s3cret@127.0.0.1:{port}?connect_timeout=1s")
    assert isinstance(e.value, ConnectionError)
    assert str(port) in str(e.value) and "s3cret" not in str(e.value)
    assert "\n" not in str(e.value)


def test_memcached_down_is_a_connection_error():
    port = free_port()
    with pytest.raises(unicache_rs.Error) as e:
        c = unicache_rs.Cache(f"memcached://127.0.0.1:{port}?connect_timeout=1s")
        c.get("k")
    assert isinstance(e.value, (unicache_rs.ConnectionError, unicache_rs.TimeoutError))


def test_timeout_on_a_frozen_server_and_gil_released():
    server = start_redis()
    try:
        c = unicache_rs.Cache(server.url + "?response_timeout=1500ms")
        c.set("k", "v")
        os.kill(server.proc.pid, signal.SIGSTOP)
        outcome = []
        t = threading.Thread(target=lambda: outcome.append(_catch(c.get, "k")))
        t.start()
        # While the call waits on the server, this thread keeps running Python.
        spins, deadline = 0, time.monotonic() + 0.5
        while time.monotonic() < deadline:
            spins += 1
        t.join(10)
        assert spins > 10_000
        assert isinstance(outcome[0], unicache_rs.TimeoutError), outcome
        os.kill(server.proc.pid, signal.SIGCONT)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


def _catch(f, *a):
    try:
        return f(*a)
    except Exception as e:  # noqa: BLE001
        return e


def test_sqlite_file_is_private(tmp_path):
    with unicache_rs.Cache(f"sqlite:{tmp_path}/c.sqlite3") as c:
        c.set("k", "v")
    assert os.stat(tmp_path / "c.sqlite3").st_mode & 0o777 == 0o600


@pytest.mark.parametrize("method", ["get_many", "delete_many"])
def test_a_str_is_not_a_list_of_keys(method):
    with unicache_rs.Cache("memory://") as c:
        c.set("a", "1")
        with pytest.raises(TypeError, match="not a str"):
            getattr(c, method)("abc")
        assert c.get("a") == b"1"


def test_partial_batch_error_names_the_failed_keys(memcached_server):
    with unicache_rs.Cache(memcached_server.url + "?namespace=partial") as c:
        big = b"x" * (2 << 20)  # over memcached's 1 MB item limit
        with pytest.raises(unicache_rs.PartialBatchError) as e:
            c.set_many({"ok": b"1", "big": big, "ok2": b"2"})
        assert e.value.keys == ["big"]
        assert isinstance(e.value.failures["big"], unicache_rs.ValueTooLargeError)
        assert '"big"' in str(e.value)
        assert c.get_many(["ok", "ok2", "big"]) == {"ok": b"1", "ok2": b"2"}

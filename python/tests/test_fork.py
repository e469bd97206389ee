"""A process forked after using unicache (gunicorn --preload, multiprocessing's
fork start method): the runtime's threads do not survive fork(), so the child
gets a runtime of its own and reopens the caches it inherited, instead of
hanging on their first call."""

import os
import signal

import pytest

import unicache_rs


def _in_child(body):
    """Runs body() in a forked child; its exit status (0: it held)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(10)  # a hang fails the test, not the run
            body()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def _fork_after_writing(url):
    """A cache written to (and read) in the parent, then used in a forked
    child, inherited and opened anew; the child's write seen by the parent."""
    c = unicache_rs.Cache(url)
    c.set("before", b"parent")
    assert c.get("before") == b"parent"

    def child():
        assert c.get("before") == b"parent"
        c.set("child", b"hello")
        assert c.get("child") == b"hello"
        if c.backend_name == "memory":
            return  # the child's own copy
        fresh = unicache_rs.Cache(url)
        assert fresh.get("child") == b"hello"
        fresh.close()

    assert _in_child(child) == 0
    if c.backend_name != "memory":
        assert c.get("child") == b"hello", "the child's write is in the shared store"
    c.set("after", b"parent again")
    assert c.get("after") == b"parent again"
    c.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_forked_child_uses_inherited_and_new_caches(cache_url):
    _fork_after_writing(cache_url)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_lock_made_before_fork_works_in_the_child(cache_url):
    # A lock made at import time and used by a forked worker: it must use
    # the child's reopened cache, not the parent's handle (which hangs).
    c = unicache_rs.Cache(cache_url)
    lock = c.lock("forked", timeout=10, blocking_timeout=5)
    c.set("warm", b"1")  # the parent's handle in use before the fork

    def child():
        assert lock.acquire()
        assert lock.locked()
        lock.release()

    assert _in_child(child) == 0
    assert not lock.locked()
    c.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_forks_right_after_a_first_sqlite_write_do_not_hang(tmp_path):
    # A first write starts the SQLite upkeep thread, which opens its own
    # connection at once: a fork while it held one of SQLite's mutexes left
    # the child hanging on its first SQLite call (14 of 20 runs of the test
    # above hung here before the fork hooks).
    url = f"sqlite:{tmp_path / 'f.sqlite3'}"
    for _ in range(20):
        _fork_after_writing(url)

"""A ``redis+sentinel://`` URL from Python and as Django's ``LOCATION``: a
master, one replica and three sentinels (``redis-server --sentinel``) on
free loopback ports, started once for this module and killed at its end.
Set/get through ``unicache_rs.Cache``; set/get/incr/delete_many through
Django's cache handler configured with ``unicache_rs.django.UnicacheCache``;
``sentinel_password`` never in an error's text; and a ``SENTINEL FAILOVER``
after which the same cache objects write to the new master and read back.

The harness is this file's own (a few lines of RESP over a socket, no
redis-py): conftest.py is shared with other tests."""

import shutil
import socket
import subprocess
import time
import uuid

import pytest

import unicache_rs

MASTER = "mymaster"
DOWN_AFTER_MS = 1000

if shutil.which("redis-server") is None:
    pytest.skip("redis-server is not installed", allow_module_level=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_reply(f):
    line = f.readline()
    if not line:
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise ValueError(f"unexpected reply {line!r}")


def resp(port, *args, timeout=2.0):
    """One command to 127.0.0.1:port; its reply (an error reply is returned
    as a RuntimeError, not raised)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        s.sendall(b"".join(parts))
        with s.makefile("rb") as f:
            return _read_reply(f)


def _try(port, *args):
    try:
        return resp(port, *args)
    except OSError:
        return None


def wait_until(what, ok, within=20.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {within}s")


class SentinelSet:
    """A master, one replica and three sentinels, in ``tmp``."""

    def __init__(self, tmp):
        self.procs = []
        try:
            self._start(tmp)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, port, argv):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        wait_until(f"{argv[0]} on {port}", lambda: p.poll() is None and _try(port, "PING") == "PONG", 10)

    def _data_node(self, tmp, port, *extra):
        d = tmp / f"n{port}"
        d.mkdir()
        self._spawn(port, [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--dir", str(d),
            "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0", *extra,
        ])

    def _start(self, tmp):
        self.master = _free_port()
        self._data_node(tmp, self.master)
        self.replica = _free_port()
        self._data_node(tmp, self.replica, "--replicaof", "127.0.0.1", str(self.master))
        self.sentinels = []
        for _ in range(3):
            port = _free_port()
            d = tmp / f"s{port}"
            d.mkdir()
            conf = d / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {d}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} 3000\n"
            )
            self._spawn(port, ["redis-server", str(conf), "--sentinel"])
            self.sentinels.append(port)
        wait_until("the sentinels to know the set-up", self._known)

    def _known(self):
        info = _try(self.master, "INFO", "replication") or b""
        if b"state=online" not in info:
            return False
        for s in self.sentinels:
            r = _try(s, "SENTINEL", "MASTER", MASTER)
            if not isinstance(r, list):
                return False
            fields = dict(zip(r[::2], r[1::2]))
            if int(fields.get(b"num-slaves", 0)) < 1 or int(fields.get(b"num-other-sentinels", 0)) < 2:
                return False
        return True

    def url(self, query=""):
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER}{query}"

    def master_port(self):
        """The master's port as the first sentinel that answers names it."""
        for s in self.sentinels:
            r = _try(s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
            if isinstance(r, list):
                return int(r[1])
        return None

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def sentinel_set(tmp_path_factory):
    s = SentinelSet(tmp_path_factory.mktemp("sentinel"))
    yield s
    s.stop()


def django_cache(location):
    """Django's cache for ``location`` through its own cache handler, as a
    project's ``CACHES`` setting makes it."""
    pytest.importorskip("django")
    from django.core.cache import CacheHandler

    handler = CacheHandler(
        {"default": {"BACKEND": "unicache_rs.django.UnicacheCache", "LOCATION": location}}
    )
    return handler["default"]


def test_cache_set_get(sentinel_set):
    ns = f"py{uuid.uuid4().hex[:8]}"
    c = unicache_rs.Cache(sentinel_set.url(), namespace=ns)
    c.set("k", "v")
    assert c.get("k") == b"v"
    assert c.get("absent") is None
    # On the master the sentinels name.
    assert resp(sentinel_set.master_port(), "GET", f"{ns}:k") == b"v"


def test_django_location(sentinel_set):
    ns = f"dj{uuid.uuid4().hex[:8]}"
    c = django_cache(sentinel_set.url(f"?namespace={ns}"))
    c.set("a", {"x": 1})
    assert c.get("a") == {"x": 1}
    c.set("n", 5)
    assert c.incr("n", 3) == 8
    assert c.get("n") == 8
    c.set_many({"d1": 1, "d2": 2, "d3": 3})
    c.delete_many(["d1", "d2"])
    assert c.get_many(["d1", "d2", "d3"]) == {"d3": 3}


def test_sentinel_password_is_never_shown(sentinel_set):
    secret = "s3cretSENT"
    dead = _free_port()
    for url in [
        # No sentinel answers (the data nodes' password beside it).
        f"redis+sentinel://:{secret}D@127.0.0.1:{dead}/{MASTER}?sentinel_password={secret}"
        "&connect_timeout=1s",
        # Sentinels that know no such master.
        sentinel_set.url().replace(MASTER, "nosuch") + f"?sentinel_password={secret}&connect_timeout=1s",
        # A bad option beside it.
        sentinel_set.url(f"?sentinel_password={secret}&bogus=1"),
    ]:
        with pytest.raises(unicache_rs.Error) as e:
            unicache_rs.Cache(url)
        text = f"{e.value} {e.value!r}"
        assert secret not in text, text
        assert "sentinel" in text
        with pytest.raises(Exception) as e:
            django_cache(url).get("k")
        text = f"{e.value} {e.value!r}"
        assert secret not in text, text


def test_writes_follow_a_sentinel_failover(sentinel_set):
    ns = f"fo{uuid.uuid4().hex[:8]}"
    c = unicache_rs.Cache(sentinel_set.url(), namespace=ns)
    dj = django_cache(sentinel_set.url(f"?namespace={ns}dj"))
    c.set("before", "1")
    dj.set("before", 1)
    old = sentinel_set.master_port()
    assert resp(sentinel_set.sentinels[0], "SENTINEL", "FAILOVER", MASTER) == "OK"
    wait_until(
        "the sentinels to name the new master",
        lambda: sentinel_set.master_port() not in (None, old)
        and (_try(sentinel_set.master_port(), "ROLE") or [b""])[0] == b"master",
    )
    new = sentinel_set.master_port()
    # The switch may fail a write or two (transient, as for any client);
    # within a bounded time, writes through the same objects succeed.
    deadline = time.monotonic() + 15
    while True:
        try:
            c.set("after", "2")
            dj.set("after", 2)
            break
        except (unicache_rs.Error, ConnectionError, TimeoutError):
            assert time.monotonic() < deadline, "no write succeeded after the failover"
            time.sleep(0.1)
    assert c.get("after") == b"2" and dj.get("after") == 2
    assert c.get("before") == b"1" and dj.get("before") == 1
    assert resp(new, "GET", f"{ns}:after") == b"2"
    assert sentinel_set.master_port() == new != old

"""Ctrl-C reaches Python while a call waits on Rust: a get_or_set factory,
a get to a frozen server. Each case runs a child process that gets SIGINT
and must end with KeyboardInterrupt within about a second."""

import os
import signal
import subprocess
import sys
import time

from conftest import start_redis

# The child prints lines the parent waits for, then gets SIGINT.
LONG_FACTORY = r"""
import sys, threading, time, unicache_rs
c = unicache_rs.Cache(sys.argv[1])

def factory():
    print("started", flush=True)
    time.sleep(60)
    return b"late"

# Waits for the same key: takes over when the main thread is interrupted.
other = []
def wait():
    started.wait()
    other.append(c.get_or_set("k", lambda: b"taken over"))
started = threading.Event()
t = threading.Thread(target=wait)
t.start()
try:
    threading.Timer(0.3, started.set).start()
    c.get_or_set("k", factory)
except KeyboardInterrupt:
    print(f"interrupted at {time.monotonic():.3f}", flush=True)
    t.join(10)
    print("waiter got", other, flush=True)
    print("stored", c.get("k"), flush=True)
    sys.exit(42)
print("not interrupted", flush=True)
"""

# A factory in C that never looks at signals: the interrupt is seen when it
# returns, and its value must not be stored.
C_FACTORY = r"""
import functools, hashlib, sys, time, unicache_rs
c = unicache_rs.Cache(sys.argv[1])
t = time.monotonic()
hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", 20000)
rounds = int(20000 * 1.5 / max(time.monotonic() - t, 1e-6))  # about 1.5 s
print("started", flush=True)
try:
    c.get_or_set("k", functools.partial(hashlib.pbkdf2_hmac, "sha256", b"pw", b"salt", rounds))
except KeyboardInterrupt:
    print(f"interrupted at {time.monotonic():.3f}", flush=True)
    print("stored", c.get("k"), flush=True)
    sys.exit(42)
print("not interrupted", flush=True)
"""

FROZEN_GET = r"""
import sys, time, unicache_rs
c = unicache_rs.Cache(sys.argv[1])
c.set("k", "v")
print("ready", flush=True)
sys.stdin.readline()
print("getting", flush=True)
try:
    c.get("k")
except KeyboardInterrupt:
    print(f"interrupted at {time.monotonic():.3f}", flush=True)
    sys.exit(42)
print("not interrupted", flush=True)
"""


def child(script, url):
    return subprocess.Popen(
        [sys.executable, "-c", script, url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def expect_line(p, prefix, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line and p.poll() is not None:
            break
    p.kill()
    raise AssertionError(f"no {prefix!r} from the child: {p.stderr.read()[-2000:]}")


def interrupt(p, within):
    """SIGINT, then the child's exit within `within` seconds: (seconds until
    the child caught KeyboardInterrupt, by the system-wide monotonic clock;
    rest of stdout)."""
    t = time.monotonic()
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"the child ignored SIGINT for {within}s") from None
    assert p.returncode == 42, (p.returncode, out, err[-2000:])
    caught = [float(w.split()[-1]) for w in out.splitlines() if w.startswith("interrupted at")]
    return (caught[0] - t if caught else None), out


def test_ctrl_c_stops_a_long_factory_and_a_waiter_takes_over(tmp_path):
    url = f"sqlite:{tmp_path}/c.sqlite3"
    p = child(LONG_FACTORY, url)
    expect_line(p, "started")
    time.sleep(0.5)  # the waiter thread is waiting on the flight
    took, out = interrupt(p, within=5)
    print(f"KeyboardInterrupt {took:.3f}s after SIGINT")
    assert took < 0.5, (took, out)  # 50 ms polls; slack for a loaded machine
    assert "waiter got [b'taken over']" in out, out
    # The interrupted factory's value was never stored; the waiter's was.
    assert "stored b'taken over'" in out, out


def test_a_signal_seen_as_a_c_factory_returns_stores_nothing(tmp_path):
    url = f"sqlite:{tmp_path}/c.sqlite3"
    p = child(C_FACTORY, url)
    expect_line(p, "started")
    time.sleep(0.3)
    _, out = interrupt(p, within=20)
    assert "stored None" in out, out


def test_ctrl_c_stops_a_get_to_a_frozen_server():
    server = start_redis()
    try:
        p = child(FROZEN_GET, server.url)
        expect_line(p, "ready")
        os.kill(server.proc.pid, signal.SIGSTOP)
        p.stdin.write("\n")
        p.stdin.flush()
        expect_line(p, "getting")
        time.sleep(0.3)
        took, out = interrupt(p, within=15)
        print(f"KeyboardInterrupt {took:.3f}s after SIGINT")
        assert took < 0.5, (took, out)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()

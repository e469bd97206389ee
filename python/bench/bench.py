"""unicache_rs (unicache for Python) against the usual Python clients, same machine, same run.

    python python/bench/bench.py [--quick] [--only redis,memcached,local,memory,write,threads]

Starts its own redis-server and memcached on free loopback ports and stops
them. Needs the wheel (scripts/build_wheels.sh) and redis, pymemcache,
diskcache, cachelib (pip install "target/wheels/unicache_rs-*.whl[bench]"). Prints one line per measure with the ratio; the issue's
targets are in brackets.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import unicache_rs

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv, port):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit(f"{argv[0]} did not start")


def per_call(f, n):
    """Best of 3 runs of n calls: seconds per call."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for i in range(n):
            f(i)
        best = min(best, (time.perf_counter() - t) / n)
    return best


def once(f):
    """Best of 3: seconds for one call of f()."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def line(what, ours, theirs, target, lower_is_better=True):
    ratio = theirs / ours if lower_is_better else ours / theirs
    print(f"{what:58s} unicache {fmt(ours)}  other {fmt(theirs)}  => {ratio:6.2f}x faster  [{target}]",
          flush=True)


def fmt(s):
    return f"{s * 1e6:9.1f} us" if s < 0.01 else f"{s:9.3f} s "


def bench_redis(n, big):
    import redis

    port = free_port()
    p = start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no"], port)
    try:
        u = unicache_rs.Cache(f"redis://127.0.0.1:{port}")
        r = redis.Redis(host="127.0.0.1", port=port)
        u.set("k", b"v" * 100)
        lat_u = per_call(lambda i: u.get("k"), n)
        lat_r = per_call(lambda i: r.get("k"), n)
        line("redis get latency (vs redis-py)", lat_u, lat_r, "get at most 1.0x redis-py's time")
        data = {f"key:{i}": b"x" * 100 for i in range(big)}
        t_u = once(lambda: u.set_many(data))

        def pipelined():
            pipe = r.pipeline(transaction=False)
            for k, v in data.items():
                pipe.set(k, v)
            pipe.execute()

        items = list(data.items())

        def pipelined_mset():
            pipe = r.pipeline(transaction=False)
            for i in range(0, len(items), 1000):
                pipe.mset(dict(items[i:i + 1000]))
            pipe.execute()

        t_pipe = once(pipelined)
        t_pmset = once(pipelined_mset)
        t_mset = once(lambda: r.mset(data))
        line(f"redis set_many {big:,} (vs redis-py pipelined set loop)", t_u, t_pipe, ">= 3x")
        line(f"redis set_many {big:,} (vs redis-py pipelined mset loop, 1k each)", t_u, t_pmset, ">= 3x")
        line(f"redis set_many {big:,} (vs one redis-py mset of all {big:,})", t_u, t_mset, "for information")
        bench_threads(u, n)
        u.close()
    finally:
        p.kill()
        p.wait()


def bench_threads(u, n):
    def rate(threads, seconds=1.5):
        stop = time.perf_counter() + seconds
        counts = [0] * threads

        def work(i):
            c = 0
            while time.perf_counter() < stop:
                for _ in range(50):
                    u.get("k")
                c += 50
            counts[i] = c

        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(counts) / seconds

    one, four = rate(1), rate(4)
    print(f"{'redis get, 4 threads vs 1 (GIL released)':58s} 1 thread {one:,.0f}/s  4 threads "
          f"{four:,.0f}/s  => {four / one:6.2f}x  [>= 2.5x]", flush=True)


def bench_memcached(big):
    from pymemcache.client.base import Client

    port = free_port()
    root = ["-u", "root"] if os.geteuid() == 0 else []
    p = start(["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "1024",
               "-t", "2", *root], port)
    try:
        u = unicache_rs.Cache(f"memcached://127.0.0.1:{port}")
        m = Client(("127.0.0.1", port))
        data = {f"key:{i}": b"x" * 100 for i in range(big)}
        t_u = once(lambda: u.set_many(data))
        t_m = once(lambda: m.set_many(data, noreply=False))
        line(f"memcached set_many {big:,} (vs pymemcache set_many)", t_u, t_m, ">= 2x")
        u.close()
    finally:
        p.kill()
        p.wait()


def bench_local(n):
    import diskcache

    with tempfile.TemporaryDirectory() as d:
        dc = diskcache.Cache(os.path.join(d, "dc"))
        value = b"x" * 100
        t_dset = per_call(lambda i: dc.set(f"k{i}", value), n)
        t_dget = per_call(lambda i: dc.get(f"k{i}"), n)
        # diskcache (SQLite WAL, synchronous=NORMAL) does not fsync per set,
        # nor does the file log's default (sync=periodic: fsync within ~1 s);
        # sync=batch fsyncs per set, shown for information.
        for i, (name, url) in enumerate([("file log, default sync=periodic", "file:{d}/u0.log"),
                                        ("file log, sync=batch (fsync per set)", "file:{d}/u1.log?sync=batch"),
                                        ("sqlite", "sqlite:{d}/u.sqlite3")]):
            u = unicache_rs.Cache(url.format(d=d))
            t_set = per_call(lambda i: u.set(f"k{i}", value), n)
            t_get = per_call(lambda i: u.get(f"k{i}"), n)
            line(f"{name} set per call (vs diskcache)", t_set, t_dset, ">= 2x")
            line(f"{name} get per call (vs diskcache)", t_get, t_dget, ">= 2x")
            u.close()
        dc.close()


def bench_memory(n):
    from cachelib import SimpleCache

    u = unicache_rs.Cache("memory://")
    s = SimpleCache(threshold=100_000)
    for i in range(1000):
        u.set(f"k{i}", b"x" * 100)
        s.set(f"k{i}", b"x" * 100)
    keys = [f"k{i % 1000}" for i in range(n)]
    t_u = per_call(lambda i: u.get(keys[i]), n)
    t_s = per_call(lambda i: s.get(keys[i]), n)
    print(f"{'memory get (vs cachelib SimpleCache)':58s} unicache {fmt(t_u)}  other {fmt(t_s)}  "
          f"=> {t_u / t_s:6.2f}x its time  [at most 1.5x]", flush=True)


def load_seed():
    path = Path(os.environ.get("SEED", ROOT.parent / "shared" / "seed" / "000_e7e2184d6c7d60ae.txt"))
    if not path.exists():
        return None
    code = re.search(r"```python\n(.*?)```", path.read_text(), re.S).group(1)
    # Its file backend rewrites the whole JSON file per set (quadratic): use
    # its SQLite backend on a file, as scripts/bench_write.sh does.
    code = code.replace(
        "caches.append((b, create_cache(b, bp)))",
        'caches.append((b, create_cache(b, (base_path / "seed.sqlite3") if b == "sqlite" else bp)))',
    )
    mod = types.ModuleType("seed_writer")
    sys.modules["seed_writer"] = mod  # dataclasses look the module up
    exec(compile(code, str(path), "exec"), mod.__dict__)
    return mod.__dict__


def bench_write(big, seed_n):
    """Records per second: unicache_rs.write of `big` records vs the seed's run()
    on `seed_n` (it commits, and so syncs, once per record: a full 100k run
    takes many minutes)."""
    seed = load_seed()
    if seed is None:
        print("write: the seed program was not found (set SEED=path)", flush=True)
        return

    def records(n):
        return [{"key": f"user:{i}", "name": f"name {i}", "score": i % 100, "tags": ["a", "b"]}
                for i in range(n)]

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        inp = d / "in.json"
        inp.write_text(json.dumps({"records": records(big), "backends": ["sqlite"]}))
        t0 = time.perf_counter()
        s = unicache_rs.write(str(inp), caches=[f"sqlite:{d}/u.sqlite3"])
        t_u = (time.perf_counter() - t0) / big
        assert s["records_written"] == big, s
        seed_in = d / "seed_in.json"
        seed_in.write_text(json.dumps({"records": records(seed_n), "backends": ["sqlite"]}))
        (d / "seed").mkdir()
        t0 = time.perf_counter()
        seed["run"](seed_in, d / "seed" / "summary.json")
        t_seed = (time.perf_counter() - t0) / seed_n
        print(f"{'write to SQLite, per record (vs the seed run())':58s} unicache {1 / t_u:,.0f} rec/s "
              f"({big:,})  seed {1 / t_seed:,.0f} rec/s ({seed_n:,})  => {t_seed / t_u:6.1f}x  "
              "[>= 100x]", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    ap.add_argument("--only", default="redis,memcached,local,memory,write")
    a = ap.parse_args()
    n, big = (2000, 10_000) if a.quick else (20_000, 100_000)
    seed_n = 1000 if a.quick else 10_000
    only = set(a.only.split(","))
    print(f"unicache {unicache_rs.__version__}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs; per-call figures are the best of 3 runs", flush=True)
    if "redis" in only and shutil.which("redis-server"):
        bench_redis(n, big)
    if "memcached" in only and shutil.which("memcached"):
        bench_memcached(big)
    if "local" in only:
        bench_local(n)
    if "memory" in only:
        bench_memory(n * 10)
    if "write" in only:
        bench_write(big, seed_n)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()

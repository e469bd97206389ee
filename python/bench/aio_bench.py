"""unicache_rs.AsyncCache against redis.asyncio (redis-py) and aiocache on
the same redis-server (started here on a free loopback port).

    pip install "redis>=5" "aiocache>=0.12" uvloop  dist/unicache_rs-*.whl
    python python/bench/aio_bench.py [--loop asyncio|uvloop] [--rounds 5]

Two measures per client, each the median of --rounds rounds:
- throughput: 10,000 `get`s of one key gathered at once
  (`asyncio.gather`), gets per second;
- latency: 2,000 single `get`s one after the other, p50 (and p99) in µs.
Goal: at least 2x redis.asyncio's throughput, p50 no worse.

redis.asyncio runs with a BlockingConnectionPool of 64 connections (its
default pool would open one connection per concurrent call: 10,000
sockets); aiocache with the same pool (pool_max_size=64,
connection_pool_class=BlockingConnectionPool) and no serializer (it returns
str).
"""

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

N_GATHER = 10_000
N_SINGLE = 2_000
KEY, VALUE = "bench:k", b"v" * 100
POOL = 64


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis():
    port = free_port()
    d = tempfile.mkdtemp(prefix="aio-bench-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", d],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return proc, port, d
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("aio_bench: redis-server did not start")


async def measure(get, rounds):
    assert await get(KEY) in (VALUE, VALUE.decode())
    tput, p50s, p99s = [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        got = await asyncio.gather(*(get(KEY) for _ in range(N_GATHER)))
        tput.append(N_GATHER / (time.perf_counter() - t))
        assert got[-1] in (VALUE, VALUE.decode())
        lat = []
        for _ in range(N_SINGLE):
            t = time.perf_counter()
            await get(KEY)
            lat.append(time.perf_counter() - t)
        lat.sort()
        p50s.append(lat[len(lat) // 2] * 1e6)
        p99s.append(lat[int(len(lat) * 0.99)] * 1e6)
    return statistics.median(tput), statistics.median(p50s), statistics.median(p99s)


async def main(port, rounds):
    import redis.asyncio as aredis
    from aiocache import RedisCache
    from aiocache.serializers import NullSerializer

    import unicache_rs

    url = f"redis://127.0.0.1:{port}"
    results = {}

    u = await unicache_rs.AsyncCache.open(url)
    await u.set(KEY, VALUE)
    results["unicache_rs.AsyncCache"] = await measure(u.get, rounds)
    await u.close()

    pool = aredis.BlockingConnectionPool(host="127.0.0.1", port=port, max_connections=POOL)
    r = aredis.Redis(connection_pool=pool)
    results["redis.asyncio"] = await measure(r.get, rounds)
    await r.aclose()

    a = RedisCache(endpoint="127.0.0.1", port=port, serializer=NullSerializer(),
                   pool_max_size=POOL, connection_pool_class=aredis.BlockingConnectionPool)
    results["aiocache RedisCache"] = await measure(a.get, rounds)
    await a.close()
    return results


def run():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("aio_bench: needs redis-server on PATH")
    proc, port, d = start_redis()
    try:
        if args.loop == "uvloop":
            import uvloop

            results = uvloop.run(main(port, args.rounds))
        else:
            results = asyncio.run(main(port, args.rounds))
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)
    base = results["redis.asyncio"]
    print(f"loop {args.loop}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"median of {args.rounds} rounds")
    print(f"{'client':26s} {'gather 10k get/s':>17s} {'p50 µs':>8s} {'p99 µs':>8s}"
          f" {'tput vs redis.asyncio':>22s} {'p50 vs redis.asyncio':>21s}")
    for name, (tput, p50, p99) in results.items():
        print(f"{name:26s} {tput:17,.0f} {p50:8.1f} {p99:8.1f} {tput / base[0]:21.2f}x"
              f" {p50 / base[1]:20.2f}x")


if __name__ == "__main__":
    run()

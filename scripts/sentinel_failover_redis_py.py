"""redis-py's Sentinel client writing in a loop, for the failover comparison
in tests/sentinel.rs (`failover_time_vs_redis_py`, ignored by default).

Usage: python sentinel_failover_redis_py.py MASTER_NAME PORT [PORT...]
Writes `pyfail:N` every ~2 ms; after a failed write, retries every 10 ms
and prints `first_success_after_failure <unix seconds>` at the first write
that succeeds, then exits. Gives up after 60 s.
"""
import sys
import time

from redis.sentinel import Sentinel


def main():
    name, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
    s = Sentinel([("127.0.0.1", p) for p in ports], socket_timeout=0.5)
    m = s.master_for(name, socket_timeout=0.5, socket_connect_timeout=0.5)
    print("ready", flush=True)
    failed = False
    start = time.time()
    i = 0
    while time.time() - start < 60:
        try:
            m.set(f"pyfail:{i}", "x")
            i += 1
            if failed:
                print(f"first_success_after_failure {time.time():.6f}", flush=True)
                return
            time.sleep(0.002)
        except Exception:  # noqa: BLE001 - any failure counts as down
            failed = True
            time.sleep(0.01)
    print("gave up", flush=True)


main()

#!/usr/bin/env python3
"""KV demo load generator: N client threads, alternating SET and GET.

Writes a JSON summary (ops, errors, throughput_ops, latency_p50_us,
latency_p99_us, ...) to --output. Python standard library only.
"""
import argparse
import json
import os
import socket
import sys
import threading
import time


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def client(addr, n_ops, value, index, latencies, errors):
    with socket.create_connection(addr, timeout=10) as s:
        f = s.makefile("rwb")
        for i in range(n_ops):
            key = b"k%d-%d" % (index, (i // 2) % 1000)  # a GET reads the SET before it
            t0 = time.perf_counter_ns()
            if i % 2 == 0:
                f.write(b"SET %s %d\n" % (key, len(value)) + value)
                f.flush()
                ok = f.readline() == b"OK\n"
            else:
                f.write(b"GET %s\n" % key)
                f.flush()
                head = f.readline()
                ok = head.startswith(b"VALUE ")
                if ok:
                    f.read(int(head.split()[1]))
            latencies.append(time.perf_counter_ns() - t0)
            if not ok:
                errors.append(i)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--server", required=True, help="host:port")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--value-size", type=int, default=64)
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--output", default="load.json")
    args = ap.parse_args()
    host, port = args.server.rsplit(":", 1)
    addr = (host, int(port))
    value = os.urandom(args.value_size // 2 + 1).hex().encode()[: args.value_size]
    per_client = max(1, args.ops // args.clients)
    latencies, errors, threads = [], [], []
    start = time.perf_counter()
    for c in range(args.clients):
        t = threading.Thread(target=client, args=(addr, per_client, value, c, latencies, errors))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    lat = sorted(latencies)
    summary = {
        "clients": args.clients,
        "value_size": args.value_size,
        "ops": len(lat),
        "errors": len(errors),
        "seconds": elapsed,
        "throughput_ops": len(lat) / elapsed if elapsed > 0 else None,
        "latency_p50_us": percentile(lat, 0.50) / 1000 if lat else None,
        "latency_p99_us": percentile(lat, 0.99) / 1000 if lat else None,
        "latency_max_us": lat[-1] / 1000 if lat else None,
    }
    with open(args.output, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    print(json.dumps(summary, sort_keys=True))
    return 1 if errors or len(lat) < per_client * args.clients else 0


if __name__ == "__main__":
    sys.exit(main())

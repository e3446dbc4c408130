#!/usr/bin/env python3
"""Streaming demo coordinator: broadcasts N UDP events to every worker.

Gaps follow a repeating pattern of slow (100 ms), medium (50 ms) and fast
(10 ms). Each datagram is `event_id,send_time_ns`. After the last event it
sends `END` to every worker. Python standard library only.
"""
import argparse
import socket
import sys
import time

GAPS_S = {"slow": 0.100, "medium": 0.050, "fast": 0.010}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--num-events", type=int, required=True)
    ap.add_argument("--workers", required=True, help="host:port,host:port,...")
    ap.add_argument("--pattern", default="fast", help="comma-separated slow|medium|fast")
    args = ap.parse_args()

    pattern = [p.strip() for p in args.pattern.split(",") if p.strip()]
    unknown = [p for p in pattern if p not in GAPS_S]
    if unknown or not pattern:
        print(f"unknown pattern entries {unknown}; use slow, medium, fast", file=sys.stderr)
        return 2
    targets = []
    for w in args.workers.split(","):
        host, _, port = w.rpartition(":")
        targets.append((host, int(port)))

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(args.num_events):
        msg = f"{i},{time.time_ns()}".encode("ascii")
        for t in targets:
            sock.sendto(msg, t)
        time.sleep(GAPS_S[pattern[i % len(pattern)]])
    for t in targets:
        sock.sendto(b"END", t)
    print(f"sent {args.num_events} events to {len(targets)} workers", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

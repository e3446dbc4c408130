#!/usr/bin/env python3
"""Streaming demo worker: receives UDP events and timestamps each arrival.

Prints `Worker ready, listening on port P` once bound, writes one CSV row per
event (event_id, send_time_ns, receive_time_ns, node_id, seq_in_worker), and
exits on an `END` datagram, SIGTERM or SIGINT. Python standard library only.
"""
import argparse
import csv
import signal
import socket
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--node-id", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--output", default="worker.csv")
    ap.add_argument("--bind", default="0.0.0.0")
    args = ap.parse_args()

    stop = False

    def on_signal(_signum, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.bind, args.port))
    sock.settimeout(0.2)
    print(f"Worker ready, listening on port {args.port}", flush=True)

    received = 0
    with open(args.output, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "send_time_ns", "receive_time_ns", "node_id", "seq_in_worker"])
        f.flush()
        while not stop:
            try:
                data, _ = sock.recvfrom(2048)
            except socket.timeout:
                continue
            now = time.time_ns()
            text = data.decode("ascii", "replace").strip()
            if text == "END":
                break
            try:
                event_id, send_ns = text.split(",")[:2]
                row = [int(event_id), int(send_ns), now, args.node_id, received]
            except ValueError:
                print(f"ignoring malformed datagram: {text!r}", file=sys.stderr, flush=True)
                continue
            w.writerow(row)
            f.flush()
            received += 1
    print(f"Worker {args.node_id} received {received} events", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

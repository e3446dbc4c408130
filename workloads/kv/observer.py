#!/usr/bin/env python3
"""KV demo observer: an agent beside the server whose cost the overhead
suite measures. Every --interval it asks the server for STATS over its own
connection and keeps a rate; it serves the latest sample as JSON over HTTP
on --metrics-port. Exits on SIGTERM or SIGINT. Python standard library only.
"""
import argparse
import http.server
import json
import signal
import socket
import sys
import threading
import time

LATEST = {"samples": 0}


def poll(target, interval, stop):
    f = None
    last = None
    while not stop.is_set():
        try:
            if f is None:
                f = socket.create_connection(target, timeout=2).makefile("rwb")
            f.write(b"STATS\n")
            f.flush()
            parts = f.readline().split()
            now = time.monotonic()
            keys, requests = int(parts[1]), int(parts[2])
            rate = None
            if last is not None:
                rate = (requests - last[1]) / (now - last[0])
            last = (now, requests)
            LATEST.update(keys=keys, requests=requests, requests_per_s=rate, samples=LATEST["samples"] + 1)
        except (OSError, IndexError, ValueError):
            f = None
        stop.wait(interval)


class Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(LATEST).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--metrics-port", type=int, required=True)
    ap.add_argument("--target-port", type=int, required=True)
    ap.add_argument("--target-host", default="127.0.0.1")
    ap.add_argument("--interval", type=float, default=0.001)
    args = ap.parse_args()
    stop = threading.Event()
    poller = threading.Thread(
        target=poll, args=((args.target_host, args.target_port), args.interval, stop), daemon=True
    )
    poller.start()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.metrics_port), Metrics)

    def on_signal(_signum, _frame):
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"observer serving metrics on port {args.metrics_port}", flush=True)
    server.serve_forever(poll_interval=0.05)
    print(f"observer stopped after {LATEST['samples']} samples", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

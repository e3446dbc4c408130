#!/usr/bin/env python3
"""KV demo server: an in-memory key-value store over TCP.

Protocol, one request per line:
  SET <key> <n>\\n<n bytes>   ->  OK\\n
  GET <key>\\n                ->  VALUE <n>\\n<n bytes>  or  MISSING\\n
  STATS\\n                    ->  STATS <keys> <requests>\\n
Serves until SIGTERM or SIGINT. Python standard library only.
"""
import argparse
import signal
import socketserver
import sys
import threading

STORE = {}
LOCK = threading.Lock()
REQUESTS = [0]


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        rfile, wfile = self.rfile, self.wfile
        while True:
            line = rfile.readline()
            if not line:
                return
            parts = line.split()
            if not parts:
                continue
            with LOCK:
                REQUESTS[0] += 1
            cmd = parts[0]
            if cmd == b"SET" and len(parts) == 3:
                value = rfile.read(int(parts[2]))
                with LOCK:
                    STORE[parts[1]] = value
                wfile.write(b"OK\n")
            elif cmd == b"GET" and len(parts) == 2:
                with LOCK:
                    value = STORE.get(parts[1])
                if value is None:
                    wfile.write(b"MISSING\n")
                else:
                    wfile.write(b"VALUE %d\n" % len(value) + value)
            elif cmd == b"STATS":
                with LOCK:
                    wfile.write(b"STATS %d %d\n" % (len(STORE), REQUESTS[0]))
            else:
                wfile.write(b"ERROR\n")
            wfile.flush()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bind", default="0.0.0.0")
    args = ap.parse_args()
    server = Server((args.bind, args.port), Handler)

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"kv server listening on port {args.port}", flush=True)
    server.serve_forever(poll_interval=0.05)
    print(f"kv server stopped after {REQUESTS[0]} requests, {len(STORE)} keys", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

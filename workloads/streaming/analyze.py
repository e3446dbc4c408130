#!/usr/bin/env python3
"""Streaming demo analysis: compares what the workers received.

Reads `<run dir>/hosts/*/worker.csv` and writes `<run dir>/analysis/`:
`summary.json` (per worker: received, lost, out-of-order; across workers:
events seen by all, ordering disagreements, arrival skew p50/p99 in ms) and
`arrivals.svg` (one-way delay per event and worker). Standard library only.
"""
import csv
import glob
import json
import os
import sys


def percentile(values, q):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def load(run_dir):
    workers = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "hosts", "*", "worker.csv"))):
        host = os.path.basename(os.path.dirname(path))
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f)]
        workers[host] = [
            (int(r["event_id"]), int(r["send_time_ns"]), int(r["receive_time_ns"])) for r in rows
        ]
    return workers


def summarize(workers):
    all_ids = set()
    for rows in workers.values():
        all_ids.update(e for e, _, _ in rows)
    expected = (max(all_ids) + 1) if all_ids else 0
    per_worker = {}
    for host, rows in workers.items():
        ids = [e for e, _, _ in rows]
        out_of_order = sum(1 for a, b in zip(ids, ids[1:]) if b < a)
        delays = [(r - s) / 1e6 for _, s, r in rows]
        per_worker[host] = {
            "received": len(set(ids)),
            "lost": expected - len(set(ids)),
            "out_of_order": out_of_order,
            "delay_p50_ms": percentile(delays, 0.5),
            "delay_p99_ms": percentile(delays, 0.99),
        }
    arrivals = {h: {e: r for e, _, r in rows} for h, rows in workers.items()}
    common = set.intersection(*(set(a) for a in arrivals.values())) if arrivals else set()
    skews = []
    for e in common:
        times = [a[e] for a in arrivals.values()]
        skews.append((max(times) - min(times)) / 1e6)
    disagreements = 0
    hosts = list(arrivals)
    order = sorted(common)
    for i, h1 in enumerate(hosts):
        for h2 in hosts[i + 1:]:
            for a, b in zip(order, order[1:]):
                if (arrivals[h1][a] < arrivals[h1][b]) != (arrivals[h2][a] < arrivals[h2][b]):
                    disagreements += 1
    return {
        "expected_events": expected,
        "workers": per_worker,
        "across": {
            "seen_by_all": len(common),
            "lost": sum(w["lost"] for w in per_worker.values()),
            "ordering_disagreements": disagreements,
            "skew_p50_ms": percentile(skews, 0.5),
            "skew_p99_ms": percentile(skews, 0.99),
        },
    }


def svg(workers, path):
    w, h, pad = 640, 320, 40
    series = {host: [(e, (r - s) / 1e6) for e, s, r in rows] for host, rows in workers.items()}
    points = [p for s in series.values() for p in s]
    if not points:
        return
    max_e = max(e for e, _ in points) or 1
    max_d = max(d for _, d in points) or 1
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">',
             f'<text x="{pad}" y="20" font-family="sans-serif" font-size="12">one-way delay (ms) by event</text>']
    for i, (host, pts) in enumerate(sorted(series.items())):
        c = colors[i % len(colors)]
        coords = " ".join(
            f"{pad + e / max_e * (w - 2 * pad):.1f},{h - pad - d / max_d * (h - 2 * pad):.1f}" for e, d in pts)
        parts.append(f'<polyline fill="none" stroke="{c}" points="{coords}"/>')
        parts.append(f'<text x="{w - pad - 60}" y="{20 + 14 * i}" fill="{c}" font-family="sans-serif" font-size="12">{host}</text>')
    parts.append(f'<text x="{pad}" y="{h - 10}" font-family="sans-serif" font-size="11">max {max_d:.3f} ms over {max_e + 1} events</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: analyze.py RUN_DIR", file=sys.stderr)
        return 2
    run_dir = sys.argv[1]
    workers = load(run_dir)
    if not workers:
        print(f"no hosts/*/worker.csv under {run_dir}", file=sys.stderr)
        return 1
    out = os.path.join(run_dir, "analysis")
    os.makedirs(out, exist_ok=True)
    summary = summarize(workers)
    tmp = os.path.join(out, ".summary.json.tmp")
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(out, "summary.json"))
    svg(workers, os.path.join(out, "arrivals.svg"))
    print(json.dumps(summary["across"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Benchmark: `flow analyze` of an artifact of 10,000 runs, three metrics
# each (a regex over a log, a CSV column's p99 over 100 rows, a JSON
# pointer), plus the summaries against baseline.
#
#   bash benches/analyze.sh            # RUNS=10000 by default
#
# The artifact is made once: `flow run` makes one real run, then its folder
# is copied 10,000 times with other ids, modes (baseline, perf), variants (5)
# and values. flow analyze runs once to write the metrics, then 5 times (`--no-steps`: the synthetic
# runs have no analyze steps anyway); best and median wall time and the peak
# RSS of the last try are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
flow="$PWD/target/release/flow"
runs=${RUNS:-10000}
work=$(mktemp -d "$PWD/target/bench-analyze.XXXXXX")
trap 'rm -rf "$work"' EXIT

cat > "$work/w.yaml" <<'YAML'
workload: synth
steps:
  ops: { run: "echo 'ops/s: 1234.5'" }
  table: { run: "echo lat_us; i=0; while [ $i -lt 100 ]; do echo $((100 + i)); i=$((i + 1)); done" }
  doc: { run: "echo '{\"mem\": {\"rss_mb\": 42}}'" }
metrics:
  throughput: { from: "logs/ops@local.out", regex: "ops/s: (?P<value>[0-9.]+)", better: higher }
  latency_p99: { from: "logs/table@local.out", csv: { column: lat_us, agg: p99 }, unit: us, better: lower }
  rss: { from: "logs/doc@local.out", json: /mem/rss_mb, unit: MB }
YAML
printf 'suite: synth\nworkloads:\n  - workload: w.yaml\n' > "$work/suite.yaml"
"$flow" run --suite "$work/suite.yaml" --artifacts "$work/art" > /dev/null
art=$(cd "$work/art/latest" && pwd -P)
python3 - "$art" "$runs" <<'PY'
import json, os, random, shutil, sys
art, n = sys.argv[1], int(sys.argv[2])
runs = os.path.join(art, "runs")
[seed] = os.listdir(runs)
src = os.path.join(runs, seed)
plan = json.load(open(os.path.join(src, "plan.json")))
result = json.load(open(os.path.join(src, "run_result.json")))
table = open(os.path.join(src, "logs", "table@local.out")).read().splitlines()
rng = random.Random(1)
for i in range(n):
    mode = "baseline" if i % 2 == 0 else "perf"
    size = 2 ** (i // 2 % 5)
    rid = f"synth.{mode}.r{i // 10 + 1}-{i:010x}"
    d = os.path.join(runs, rid)
    os.makedirs(os.path.join(d, "logs"))
    p = dict(plan, id=rid, mode=mode, variant=f"size={size}", variant_params={"size": size},
             dir=d, repetition=i // 10 + 1)
    json.dump(p, open(os.path.join(d, "plan.json"), "w"), indent=2)
    json.dump(dict(result, id=rid, mode=mode, variant=f"size={size}", metrics={}),
              open(os.path.join(d, "run_result.json"), "w"), indent=2)
    slow = 1.1 if mode == "perf" else 1.0
    with open(os.path.join(d, "logs", "ops@local.out"), "w") as f:
        f.write(f"ops/s: {rng.gauss(1000, 30) / slow:.1f}\n")
    with open(os.path.join(d, "logs", "table@local.out"), "w") as f:
        f.write("lat_us\n" + "".join(f"{rng.gauss(100, 10) * slow:.2f}\n" for _ in range(100)))
    with open(os.path.join(d, "logs", "doc@local.out"), "w") as f:
        f.write(json.dumps({"mem": {"rss_mb": rng.gauss(40, 2)}}) + "\n")
shutil.rmtree(src)
PY

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.3f %.3f", a[1], a[int((NR+1)/2)]}'; }
# The first analyze writes every run's metrics into its run_result.json;
# later ones find nothing changed and write only the summaries.
t0=$(date +%s.%N)
"$flow" analyze --no-steps "$art" > /dev/null
t1=$(date +%s.%N)
printf 'flow analyze, %s runs x 3 metrics, first (writes every run_result.json): %.3fs\n' \
  "$runs" "$(echo "$t1 - $t0" | bc -l)"
times=()
for t in 1 2 3 4 5; do
  t0=$(date +%s.%N)
  "$flow" analyze --no-steps "$art" > /dev/null
  t1=$(date +%s.%N)
  times+=("$(echo "$t1 - $t0" | bc -l)")
done
read -r best median <<< "$(stats "${times[@]}")"
rss=$( { /usr/bin/time -f '%M' "$flow" analyze --no-steps "$art" > /dev/null; } 2>&1 | tail -1)
printf 'flow analyze, %s runs x 3 metrics: best %ss, median %ss, peak RSS %s MB\n' \
  "$runs" "$best" "$median" "$((rss / 1024))"
head -3 "$art/summary.csv"

# Export of the same artifact: Parquet files, then a private ClickHouse
# (Debian's clickhouse-server, on loopback) when there is one, beside
# clickhouse-client inserting runs.csv and summary.csv as they are.
times=()
for t in 1 2 3 4 5; do
  rm -rf "$work/pq"
  t0=$(date +%s.%N)
  "$flow" export --format parquet --out "$work/pq" "$art" > /dev/null
  t1=$(date +%s.%N)
  times+=("$(echo "$t1 - $t0" | bc -l)")
done
read -r best median <<< "$(stats "${times[@]}")"
printf 'flow export --format parquet, %s runs: best %ss, median %ss, %s\n' \
  "$runs" "$best" "$median" "$(du -sh "$work/pq" | cut -f1)"

server=/usr/sbin/clickhouse-server
if [ -x "$server" ] && command -v clickhouse-client > /dev/null; then
  ch="$work/ch"
  mkdir -p "$ch"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  tcp=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$ch/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$ch/server.log</log><errorlog>$ch/server.err.log</errorlog><console>0</console></logger>
  <http_port>$port</http_port><tcp_port>$tcp</tcp_port><listen_host>127.0.0.1</listen_host>
  <path>$ch/data/</path><tmp_path>$ch/tmp/</tmp_path><user_files_path>$ch/files/</user_files_path>
  <format_schema_path>$ch/schemas/</format_schema_path><users_config>$ch/users.xml</users_config>
  <default_profile>default</default_profile><default_database>default</default_database>
  <mark_cache_size>5368709</mark_cache_size>
</yandex>
XML
  cat > "$ch/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex><profiles><default></default></profiles>
<users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
<quotas><default></default></quotas></yandex>
XML
  "$server" --config-file="$ch/config.xml" > /dev/null 2>&1 &
  chpid=$!
  trap 'kill "$chpid" 2>/dev/null; wait "$chpid" 2>/dev/null; rm -rf "$work"' EXIT
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/?query=SELECT%201" > /dev/null 2>&1 && break
    sleep 0.1
  done
  client=(clickhouse-client --host 127.0.0.1 --port "$tcp")
  # The peer's tables: every column of the CSV as text.
  peer_table() {
    local cols
    cols=$(head -1 "$2" | tr ',' '\n' | awk '{printf "%s`%s` String", (NR>1?", ":""), $0}')
    "${client[@]}" --query "CREATE TABLE $1 ($cols) ENGINE = MergeTree ORDER BY tuple()"
  }
  times=() peer=()
  for t in 1 2 3 4 5; do
    t0=$(date +%s.%N)
    "$flow" export --clickhouse "http://127.0.0.1:$port" --database "flow$t" "$art" > /dev/null
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc -l)")
    "${client[@]}" --query "CREATE DATABASE peer$t"
    peer_table "peer$t.runs" "$art/runs.csv"
    peer_table "peer$t.summary" "$art/summary.csv"
    t0=$(date +%s.%N)
    "${client[@]}" --query "INSERT INTO peer$t.runs FORMAT CSVWithNames" < "$art/runs.csv"
    "${client[@]}" --query "INSERT INTO peer$t.summary FORMAT CSVWithNames" < "$art/summary.csv"
    t1=$(date +%s.%N)
    peer+=("$(echo "$t1 - $t0" | bc -l)")
  done
  read -r best median <<< "$(stats "${times[@]}")"
  printf 'flow export --clickhouse, %s runs (runs, metrics, summary; counted back): best %ss, median %ss\n' \
    "$runs" "$best" "$median"
  read -r best median <<< "$(stats "${peer[@]}")"
  printf 'clickhouse-client INSERT of runs.csv and summary.csv: best %ss, median %ss\n' "$best" "$median"
  echo "rows: $("${client[@]}" --query "SELECT count() FROM flow1.flow_runs") runs, $("${client[@]}" --query "SELECT count() FROM flow1.flow_metrics") metric values"
else
  echo "clickhouse-server is not installed: the ClickHouse export is not measured"
fi

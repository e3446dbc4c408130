#!/usr/bin/env bash
# Benchmark: `flow merge` of 10 shards of 1,000 runs each into one artifact.
#
#   bash benches/merge.sh              # SHARDS=10, RUNS=10000 by default
#
# The shards are real: a suite of 10,000 one-step runs (a metric each) is
# run as `flow run --shard i/10 --jobs 2`, ten times. Then `flow merge` of
# the ten into a new artifact runs 5 times (a new output id each time, on
# this machine's disk, copying every run folder and writing runs.csv, the
# summaries, the report and junit.xml); best and median wall time and the
# peak RSS of the last try are printed. WORK=DIR keeps the shards there
# (made once) for the next try.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
flow="$PWD/target/release/flow"
shards=${SHARDS:-10}
runs=${RUNS:-10000}
work=${WORK:-}
if [ -z "$work" ]; then
  work=$(mktemp -d "$PWD/target/bench-merge.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi

points=$((runs / 2))
cat > "$work/w.yaml" <<YAML
workload: synth
params: { i: 0 }
exclusive: false
steps:
  ops: { run: "echo 'ops/s: 1{{ params.i }}'" }
metrics:
  throughput: { from: "logs/ops@local.out", regex: "ops/s: (?P<value>[0-9.]+)", better: higher }
YAML
seq -s, 1 "$points" | sed 's/^/suite: synth\nworkloads:\n  - workload: w.yaml\n    repetitions: 2\n    matrix: { i: [/; s/$/] }/' > "$work/suite.yaml"
"$flow" plan --suite "$work/suite.yaml" --shards "$shards" | tail -n +3 | head -3
start=$(date +%s.%N)
inputs=()
for i in $(seq 1 "$shards"); do
  # WORK=DIR keeps the shards between tries of this script.
  [ -e "$work/shard-$i/latest" ] || "$flow" run --suite "$work/suite.yaml" --shard "$i/$shards" --jobs 2 \
    --artifacts "$work/shard-$i" > /dev/null
  inputs+=("$work/shard-$i/latest")
done
echo "ran $shards shards of $runs runs in $(echo "$(date +%s.%N) - $start" | bc) s"

# Without a journal, ext4 does not hand out again for up to 5 minutes the
# inodes of files just deleted, and creating files right after many were
# deleted (as the shards' runs replaced their files) is 3 to 5 times slower
# on the test machine. A CI merge job runs on a fresh runner: wait that out
# (SETTLE=0 skips it), and write each try to a new folder.
sleep "${SETTLE:-300}"
times=()
stamp=$(date +%s)
for t in 1 2 3 4 5; do
  s=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/rss" "$flow" merge "${inputs[@]}" \
    -o "merged-$stamp-$t" --artifacts "$work/out" > "$work/merge.out"
  times+=("$(echo "$(date +%s.%N) - $s" | bc)")
done
cat "$work/merge.out"
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
best=$(echo "$sorted" | head -1)
median=$(echo "$sorted" | sed -n 3p)
rss=$(( $(cat "$work/rss") / 1024 ))
printf 'flow merge of %s shards, %s runs: best %.3f s, median %.3f s, peak RSS %s MB\n' \
  "$shards" "$runs" "$best" "$median" "$rss"

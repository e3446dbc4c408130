#!/usr/bin/env bash
# Benchmark: what `sources:` and mutations cost a plan. The code under test
# is a clone of a real repository (this one, by default; `REPO=path` for
# another), with one uncommitted edit and one mutation.
#
#   bash benches/sources.sh           # REPO=. TRIES=5 POINTS=100
#   SYNTH=20000 bash benches/sources.sh   # a made-up repository of 20,000
#                                         # files of 4 KiB in 100 folders
#
# Measured (best and median of TRIES, `flow plan --dry-run` to /dev/null):
#   plain        the suite without `sources:`: POINTS x 4 repetitions
#   cold         with `sources:` and a mutation (POINTS x 2 mutations x 2
#                repetitions, the same count), no snapshot written yet
#                (reads the repository, writes two snapshots)
#   warm         the same again: the snapshots are found (and checked
#                against their manifests)
#   the peer     `git worktree add` of the commit, one state, taken in turn
#                with `cold`
# and the size of a snapshot.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=${REPO:-.}
tries=${TRIES:-5}
points=${POINTS:-100}
cargo build --release --quiet
flow="$PWD/target/release/flow"
work=$(mktemp -d "$PWD/target/bench-sources.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -n "${SYNTH:-}" ]; then
  git init -q -b main "$work/app"
  python3 - "$work/app" "$SYNTH" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
line = "x" * 63 + "\n"
for i in range(n):
    d = os.path.join(root, f"d{i % 100}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}.c"), "w") as f:
        f.write(line * 64)
PY
  git -C "$work/app" add -A
  git -C "$work/app" -c user.name=b -c user.email=b@b commit -qm synth
else
  git clone -q "$repo" "$work/app"
fi
files=$(git -C "$work/app" ls-files | wc -l)
bytes=$(git -C "$work/app" ls-files -z | (cd "$work/app" && xargs -0 cat) | wc -c)
# One uncommitted edit (in one file), one patch (of another).
mapfile -t two < <(git -C "$work/app" ls-files | grep -E '\.(rs|c|py|md)$' | head -2)
echo "// patched" >> "$work/app/${two[1]}"
git -C "$work/app" diff -- "${two[1]}" > "$work/patch.diff"
git -C "$work/app" checkout -q -- "${two[1]}"
echo "// edited" >> "$work/app/${two[0]}"
values=$(seq -s, 1 "$points")
cat > "$work/w.yaml" <<EOF
workload: w
params: { n: 0 }
steps:
  a: { run: "echo {{ params.n }}" }
EOF
cat > "$work/plain.yaml" <<EOF
suite: plain
workloads:
  - { workload: w.yaml, repetitions: 4, matrix: { n: [$values] } }
EOF
cat > "$work/code.yaml" <<EOF
suite: code
sources: { app: app }
workloads:
  - workload: w.yaml
    repetitions: 2
    matrix: { n: [$values] }
    mutations: { patched: [patch.diff] }
EOF
time_one() { # prints seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$flow" plan --suite "$1" --dry-run --artifacts "$work/a" >/dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
stats() { sort -g | awk '{a[NR]=$1} END {printf "best %.3f s, median %.3f s\n", a[1], a[int((NR+1)/2)]}'; }
echo "repository: $files files, $bytes bytes; $((points * 4)) runs either way"
echo -n "plain: "; for _ in $(seq "$tries"); do time_one "$work/plain.yaml"; done | stats
# Cold, and the peer, taken in turn with the disk flushed before each, so
# that both see the same disk: this machine's write speed varies over
# minutes, by several times.
: > "$work/cold" ; : > "$work/peer"
for _ in $(seq "$tries"); do
  rm -rf "$work/app/.git/flow"; sync; sleep 1
  time_one "$work/code.yaml" >> "$work/cold"
  rm -rf "$work/wt"; git -C "$work/app" worktree prune; sync; sleep 1
  t0=$(date +%s.%N); git -C "$work/app" worktree add -q "$work/wt" HEAD; t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc >> "$work/peer"
done
rm -rf "$work/wt"; git -C "$work/app" worktree prune
echo -n "cold:  "; stats < "$work/cold"
echo -n "git worktree add (one state): "; stats < "$work/peer"
echo -n "warm:  "; for _ in $(seq "$tries"); do time_one "$work/code.yaml"; done | stats
echo "snapshots: $(du -sh "$work/app/.git/flow" | cut -f1) for 2 states"

#!/usr/bin/env bash
# Benchmark: `flow validate` on suites that would expand to far more runs
# than the cap (a 10^9-point matrix; 4,294,967,295 repetitions). Both must be
# refused (exit 2) before anything is materialised: the figures are wall
# time (best of 5) and peak RSS, measured with /usr/bin/time.
#
#   bash benches/cap.sh
#   OLD=/path/to/older/flow bash benches/cap.sh   # also an older build, under a 2 GB
#                                                  # address-space limit and a 60 s timeout
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
flow="$PWD/target/release/flow"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/w.yaml" <<'YAML'
workload: w
params: { a: 0, b: 0, c: 0, d: 0, e: 0, f: 0, g: 0, h: 0, i: 0 }
steps:
  t: { run: "true {{ params.a }}" }
YAML
{
  echo "suite: matrix"
  echo "workloads:"
  echo "  - workload: w.yaml"
  echo "    matrix:"
  for k in a b c d e f g h i; do echo "      $k: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"; done
} > "$work/matrix.yaml"
printf 'suite: reps\nworkloads:\n  - workload: w.yaml\n    repetitions: 4294967295\n' > "$work/reps.yaml"

measure() { # $1 = binary, $2 = suite; prints "best_s peak_kb exit"
  local best="" peak=0 code=0
  for _ in 1 2 3 4 5; do
    /usr/bin/time -f '%e %M' -o "$work/t" "$1" validate --suite "$2" >/dev/null 2>&1 && code=0 || code=$?
    read -r s kb < <(tail -n 1 "$work/t")
    if [ -z "$best" ] || awk "BEGIN{exit !($s < $best)}"; then best=$s; fi
    [ "$kb" -gt "$peak" ] && peak=$kb
  done
  echo "$best $peak $code"
}

for suite in matrix reps; do
  read -r s kb code < <(measure "$flow" "$work/$suite.yaml")
  # /usr/bin/time counts in 10 ms steps: the mean of 200 calls is finer.
  start=$(date +%s%N)
  for _ in $(seq 200); do "$flow" validate --suite "$work/$suite.yaml" >/dev/null 2>&1 || true; done
  end=$(date +%s%N)
  printf '%-7s flow: exit %s, best %s s, mean of 200 %s ms, peak RSS %s MB\n' "$suite" "$code" "$s" \
    "$(awk "BEGIN{printf \"%.2f\", ($end - $start) / 200 / 1e6}")" "$((kb / 1024))"
done

if [ -n "${OLD:-}" ]; then
  for suite in matrix reps; do
    start=$(date +%s.%N)
    code=0
    ( ulimit -v 2000000; timeout 60 "$OLD" validate --suite "$work/$suite.yaml" >/dev/null 2>"$work/old.err" ) || code=$?
    end=$(date +%s.%N)
    printf '%-7s old:  exit %s after %.1f s (%s)\n' "$suite" "$code" "$(awk "BEGIN{print $end - $start}")" \
      "$(grep -m1 -E 'memory allocation|error' "$work/old.err" | cut -c1-80)"
  done
fi

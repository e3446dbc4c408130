# flow scrape: polls a Prometheus text endpoint until stopped.
# Arguments: URL EVERY_MS TIMEOUT_MS MAX_MISSED.
# stdout: CSV `time_ns,metric,labels,value`, one row per sample, every
# row of a scrape with the host's clock (ns) read just before the request.
# A scrape fails when the request does, or when the answer is not
# Prometheus text with at least one sample (an HTML page, a proxy's error).
# stderr: each failed scrape, and the count at the end.
# Exit on TERM/INT/HUP: 0 when at least one scrape came back and at most
# MAX_MISSED failed after the first that did; 1 otherwise.
url=$1 every_ms=$2 timeout_ms=$3 max_missed=$4
ok=0 missed=0 early=0 stop=
if command -v curl > /dev/null 2>&1; then get=curl
elif command -v wget > /dev/null 2>&1; then get=wget
elif command -v python3 > /dev/null 2>&1; then get=python3
else
  echo "flow scrape: this host has none of curl, wget, python3 to fetch $url" >&2
  exit 127
fi
case $(date +%N) in
  *[!0-9]* | '')
    echo "flow scrape: \`date +%N\` does not print nanoseconds on this host" >&2
    exit 127 ;;
esac
secs=$(((timeout_ms + 999) / 1000))
fetch() {
  case $get in
    curl) curl -fsS --max-time "$secs" "$url" ;;
    wget) wget -q -O - -T "$secs" "$url" ;;
    python3) python3 -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode())' "$url" "$secs" ;;
  esac
}
finish() {
  echo "flow scrape: $ok scrapes of $url; $missed failed after the first success, $early before it" >&2
  if [ "$ok" -eq 0 ]; then
    echo "flow scrape: no scrape of $url succeeded" >&2
    exit 1
  fi
  if [ "$missed" -gt "$max_missed" ]; then
    echo "flow scrape: $missed scrapes failed, more than max_missed ($max_missed)" >&2
    exit 1
  fi
  exit 0
}
trap 'stop=1' TERM INT HUP
echo time_ns,metric,labels,value
next=$(date +%s%N)
while :; do
  t=$(date +%s%N)
  # A stop signal ends whatever runs now (date, the fetch, sleep) as well.
  [ -n "$stop" ] && finish
  # A scrape counts when the answer came and is Prometheus text with at
  # least one sample; its rows are written whole, or none of them, even
  # when the stop signal comes meanwhile.
  if body=$(fetch) && (
    trap '' TERM INT HUP
    printf '%s\n' "$body" | awk -v t="$t" -v url="$url" '
      function bad(why) {
        if (!err) err = "line " NR ": " why
      }
      /^[ \t]*(#|$)/ { next }
      {
        line = $0
        o = index(line, "{")
        if (o > 0) {
          c = 0
          while ((k = index(substr(line, c + 1), "}")) > 0) c += k
          if (c < o) { bad("a `{` without `}`"); next }
          name = substr(line, 1, o - 1)
          labels = substr(line, o + 1, c - o - 1)
          rest = substr(line, c + 1)
        } else {
          split(line, f)
          name = f[1]
          labels = ""
          rest = substr(line, index(line, name) + length(name))
        }
        gsub(/[ \t]/, "", name)
        if (name !~ /^[a-zA-Z_:][a-zA-Z0-9_:]*$/) { bad("`" name "` is not a metric name"); next }
        if (split(rest, v) < 1) { bad("`" name "` has no value"); next }
        if (v[1] !~ /^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$/ && v[1] !~ /^([-+]?Inf|NaN)$/) {
          bad("`" v[1] "` is not a number"); next
        }
        gsub(/"/, "\"\"", labels)
        rows[++n] = t "," name ",\"" labels "\"," v[1]
      }
      END {
        if (!err && n == 0) err = "no samples"
        if (err) {
          print "flow scrape: the answer of " url " is not Prometheus text: " err > "/dev/stderr"
          exit 1
        }
        for (i = 1; i <= n; i++) print rows[i]
      }'
  ); then
    ok=$((ok + 1))
  else
    [ -n "$stop" ] && finish
    if [ "$ok" -eq 0 ]; then early=$((early + 1)); else missed=$((missed + 1)); fi
    echo "flow scrape: $(date -u +%H:%M:%S) scrape of $url failed" >&2
  fi
  [ -n "$stop" ] && finish
  next=$((next + every_ms * 1000000))
  now=$(date +%s%N)
  [ -n "$stop" ] && finish
  # Late (a slow scrape): the next one starts now, on a new schedule.
  [ "$next" -lt "$now" ] && next=$now
  d=$((next - now))
  sleep "$((d / 1000000000)).$(printf %09d $((d % 1000000000)))" &
  wait $! 2> /dev/null
  [ -n "$stop" ] && finish
done

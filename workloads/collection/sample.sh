#!/bin/sh
# One sample every INTERVAL seconds, appended to samples.csv: the host's
# wall clock (ns), a sequence number and the 1-minute load average.
# Usage: sample.sh INTERVAL
interval=${1:-1}
echo "host_ns,n,load" > samples.csv
n=0
while :; do
  n=$((n + 1))
  echo "$(date +%s%N),$n,$(cut -d' ' -f1 /proc/loadavg)" >> samples.csv
  sleep "$interval"
done

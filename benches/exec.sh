#!/usr/bin/env bash
# Benchmark: `flow exec -- true` on 2 and 8 ssh hosts, against
# `ansible all -m command -a true` on the same hosts.
#
#   bash benches/exec.sh                              # flow only
#   ANSIBLE=/path/to/venv/bin/ansible bash benches/exec.sh
#
# The hosts are private sshd instances on loopback (temp keys, random
# ports), like the tests'. Each command runs 5 times; best and median wall
# time are printed. Both tools open fresh connections every time (flow's
# masters live for one invocation; ansible's ControlPersist sockets are put
# in a fresh dir per try).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
flow="$PWD/target/release/flow"
work=$(mktemp -d /tmp/flow-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
[ -x /usr/sbin/sshd ] || { echo "needs /usr/sbin/sshd (openssh-server)"; exit 1; }
[ "$(id -u)" = 0 ] && mkdir -p /run/sshd
user=$(id -un)

ssh-keygen -q -t ed25519 -N '' -f "$work/id"
cp "$work/id.pub" "$work/authorized_keys"
: > "$work/ssh_config"
for i in $(seq 1 8); do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$work/h$i"
  ssh-keygen -q -t ed25519 -N '' -f "$work/h$i/hostkey"
  cat > "$work/h$i/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $work/h$i/hostkey
AuthorizedKeysFile $work/authorized_keys
PidFile $work/h$i/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
PermitRootLogin prohibit-password
MaxSessions 32
MaxStartups 100
LogLevel ERROR
EOF
  /usr/sbin/sshd -D -e -f "$work/h$i/sshd_config" 2>/dev/null &
  pids+=($!)
  cat >> "$work/ssh_config" <<EOF
Host h$i
  HostName 127.0.0.1
  Port $port
  User $user
  IdentityFile $work/id
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
EOF
done
sleep 0.5

inventories() { # $1 = number of hosts
  {
    echo "defaults:"
    echo "  ssh_config: $work/ssh_config"
    echo "hosts:"
    for i in $(seq 1 "$1"); do echo "  h$i: { address: h$i }"; done
  } > "$work/flow-$1.yaml"
  { echo "[all]"; for i in $(seq 1 "$1"); do echo "h$i"; done; } > "$work/ansible-$1.ini"
}

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.3f %.3f", a[1], a[int((NR+1)/2)]}'; }
wall() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > /dev/null 2>&1
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

printf '%-40s %8s %8s\n' "" best median
for n in 2 8; do
  inventories "$n"
  fs=()
  for t in 1 2 3 4 5; do fs+=("$(wall "$flow" exec --hosts "$work/flow-$n.yaml" -- true)"); done
  read -r fb fm <<< "$(stats "${fs[@]}")"
  printf '%-40s %7.3fs %7.3fs\n' "flow exec -- true ($n hosts)" "$fb" "$fm"
  if [ -n "${ANSIBLE:-}" ]; then
    as=()
    for t in 1 2 3; do
      mkdir -p "$work/cp-$n-$t"
      as+=("$(ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_SSH_ARGS="-F $work/ssh_config -o ControlMaster=auto -o ControlPersist=60s" \
        ANSIBLE_SSH_CONTROL_PATH_DIR="$work/cp-$n-$t" ANSIBLE_FORKS=16 ANSIBLE_PYTHON_INTERPRETER=auto_silent \
        wall "$ANSIBLE" all -i "$work/ansible-$n.ini" -m command -a true)")
    done
    read -r ab am <<< "$(stats "${as[@]}")"
    printf '%-40s %7.3fs %7.3fs   (%.1fx flow)\n' "ansible all -m command -a true ($n hosts)" "$ab" "$am" "$(echo "$ab / $fb" | bc -l)"
  fi
done

#!/usr/bin/env bash
# A multi-host testbed on one machine: N private sshd instances on loopback
# (temp host keys, one temp client key, random ports), and an inventory that
# reaches them. Each host gets its own workdir. The first host is the
# coordinator, the others are workers with their own `vars.port`, so the
# streaming demo runs on it as it would on a cluster:
#
#   bash scripts/testbed.sh start 3 /tmp/testbed
#   flow hosts check --hosts /tmp/testbed/inventory.yaml
#   flow run --suite streaming --hosts /tmp/testbed/inventory.yaml
#   bash scripts/testbed.sh stop /tmp/testbed
#
# Needs openssh-server (/usr/sbin/sshd) and openssh-client. As root the hosts
# log in as root; otherwise as you.
set -euo pipefail

usage() { echo "usage: $0 start N DIR | stop DIR" >&2; exit 2; }

start() {
  local n=$1 dir=$2
  [ -x /usr/sbin/sshd ] || { echo "needs /usr/sbin/sshd (apt-get install openssh-server)" >&2; exit 1; }
  [ -e "$dir/pids" ] && { echo "$dir holds a running testbed: stop it first" >&2; exit 1; }
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ "$(id -u)" = 0 ] && mkdir -p /run/sshd
  local user
  user=$(id -un)
  [ -f "$dir/id" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/id"
  cp "$dir/id.pub" "$dir/authorized_keys"
  : > "$dir/pids"
  {
    echo "# A testbed of $n hosts on this machine (scripts/testbed.sh)."
    echo "defaults:"
    echo "  address: 127.0.0.1"
    echo "  user: $user"
    echo "  identity: $dir/id"
    echo "  ssh_options: { StrictHostKeyChecking: \"no\", UserKnownHostsFile: /dev/null, LogLevel: ERROR }"
    echo "hosts:"
  } > "$dir/inventory.yaml"
  for i in $(seq 1 "$n"); do
    local h=$dir/h$i port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$h/work"
    [ -f "$h/hostkey" ] || ssh-keygen -q -t ed25519 -N '' -f "$h/hostkey"
    cat > "$h/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $h/hostkey
AuthorizedKeysFile $dir/authorized_keys
PidFile $h/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxSessions 32
MaxStartups 100
LogLevel ERROR
EOF
    /usr/sbin/sshd -D -e -f "$h/sshd_config" 2> "$h/sshd.log" < /dev/null &
    echo $! >> "$dir/pids"
    if [ "$i" = 1 ]; then
      echo "  coord: { port: $port, workdir: $h/work, roles: [coordinator] }" >> "$dir/inventory.yaml"
    else
      echo "  w$((i - 1)): { port: $port, workdir: $h/work, roles: [worker], vars: { node_id: w$((i - 1)), port: $((9100 + i)) } }" >> "$dir/inventory.yaml"
    fi
  done
  sleep 0.3
  echo "testbed of $n hosts: $dir/inventory.yaml"
}

stop() {
  local dir=$1
  [ -f "$dir/pids" ] || { echo "no testbed in $dir" >&2; exit 1; }
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$dir/pids"
  rm -f "$dir/pids"
  echo "stopped the testbed in $dir"
}

case "${1:-}" in
  start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || usage; stop "$2" ;;
  *) usage ;;
esac

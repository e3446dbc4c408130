#!/bin/sh
# flow's supervisor on a remote host. POSIX sh, no other dependency than
# coreutils-level tools (setsid, kill, sleep, grep, awk).
#
# A step runs under setsid in its run dir, detached from the ssh channel that
# started it: a wrapper shell (the leader of the step's session and process
# group) runs the command with output to files and records its exit status.
# Files, for step id S in run dir D:
#   D/.flow/S.pid   the wrapper's pid (= process group id)
#   D/.flow/S.out   stdout        D/.flow/S.err   stderr
#   D/.flow/S.exit  the command's exit status (128+N: killed by signal N)
#   D/.flow/S.t0    the host's wall clock (ns) as the command starts; S.t1 as it ends
#
#   helper.sh start DIR ID CMD|-        start CMD (`-`: read it from stdin); prints the pid
#   helper.sh env DIR ID                store `export` lines from stdin for the step's ready.cmd
#   helper.sh logs DIR ID               `out N`, N bytes of stdout, `err N`, N bytes of stderr
#   helper.sh follow DIR ID             the output as it grows, as `logs` frames, until the step ends
#   helper.sh status DIR ID...          per id: `ID running`, `ID exited N`, `ID gone`, `ID unknown`
#   helper.sh read DIR ID OUT_OFF ERR_OFF  what stdout and stderr gained past those offsets,
#                                       as `out N` / `err N` frames (flow matches `ready.log` itself)
#   helper.sh signal DIR ID SIG         SIG to the step's group while its wrapper runs (`sent`/`none`)
#   helper.sh finish DIR ID             kill what is left of the step's group (a `leaks` frame), then `logs`
#   helper.sh prepare DIR [CACHE]      create the run dir (and copy the files cached in CACHE into it)
#   helper.sh now                       the host's wall clock, ns
#   helper.sh script                    run the shell script on stdin (a fetch's listing)
#   helper.sh agent [--own-steps]       serve the commands above, one request per line (see cmd_agent);
#                                       with --own-steps, a TERM or HUP to the agent stops the steps it
#                                       started (a Slurm job step ending: its job was cancelled)
#   helper.sh probe-port PORT           exit 0 when something listens on TCP PORT
#   helper.sh reap VAR=VALUE...         SIGKILL every process whose environment holds every VAR=VALUE
#   helper.sh lock OWNER                take this workdir for OWNER; exit 4, printing the holder,
#                                       when another flow holds it
#   helper.sh unlock OWNER              give it back (only when OWNER holds it)
#   helper.sh leftovers                 `PID CONTROLLER ARTIFACT RUN_DIR` of each process started
#                                       from this workdir (by any flow, alive or not); RUN_DIR is
#                                       the run's folder on the controller
#
# Every step carries FLOW_WORKDIR (this helper's workdir) in its environment,
# and from flow FLOW_CONTROLLER (which flow process started it) and
# FLOW_ARTIFACT_ID.
set -u

die() { echo "flow helper: $*" >&2; exit 2; }

# The helper lives in <workdir>/.flow/.
FLOW_WORKDIR=${0%/.flow/*}
export FLOW_WORKDIR

alive_group() { kill -s 0 -- "-$1" 2>/dev/null; }

# `STATE STARTTIME` of process $1 (fields 3 and 22 of /proc/PID/stat) into
# $pstate, empty when it is gone. Shell built-ins only: the agent asks this
# on every status poll.
proc_state() {
  pstate=""
  st=""
  read -r st 2>/dev/null < "/proc/$1/stat" || [ -n "$st" ] || return 0
  # The command name (field 2) may hold spaces and parentheses: cut after
  # its last `) `.
  st=${st##*) }
  # shellcheck disable=SC2086
  set -- $st
  [ $# -ge 20 ] || return 0
  eval "pstate=\"\$1 \${20}\""
}

# The first line of file $1 into $val (empty when it cannot be read).
first_line() {
  val=""
  read -r val 2>/dev/null < "$1" || true
}

# Whether the wrapper of step file prefix $1 still runs: its pid alone is not
# proof (pids are reused, quickly on hosts with a small pid_max), so its
# start time, recorded at start, must match too, and a zombie is gone.
leader_alive() {
  first_line "$1.pid"
  lp=$val
  first_line "$1.st"
  [ -n "$lp" ] && [ -n "$val" ] || return 1
  proc_state "$lp"
  [ -n "$pstate" ] && [ "${pstate#Z }" = "$pstate" ] && [ "${pstate#* }" = "$val" ]
}

# Whether process group $1 has a member that is not a zombie. A zombie
# still answers `kill -0`, and on hosts whose init reaps lazily a stopped
# group's processes stay zombies for a second or more after they died: a
# stop that waited for them would wait that long. Costlier than
# alive_group (it reads every /proc/PID/stat), so used while stopping only.
live_group() {
  alive_group "$1" || return 1
  # cat, not awk, opens the files: a process that ends meanwhile is skipped.
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$1" '{
      s = $0; sub(/^.*\) /, "", s); split(s, f, " ");
      if (f[3] == g && f[1] != "Z") found = 1
    } END { exit !found }'
}

cmd_start() {
  [ $# -eq 3 ] || die "usage: start DIR ID CMD|-"
  dir=$1 id=$2 run=$3
  # flow's own files (the command, its environment, the logs) are the
  # user's alone; the command itself runs with the session's umask.
  step_umask=$(umask)
  umask 077
  # Programs only where there is work for them: a step start is on every
  # run's path.
  [ -d "$dir/.flow" ] || mkdir -p "$dir/.flow" || die "cannot create $dir/.flow"
  cd "$dir" || die "cannot enter $dir"
  f=".flow/$id"
  for x in "$f.pid" "$f.exit" "$f.exit.tmp" "$f.t0" "$f.t1" "$f.sig"; do
    if [ -e "$x" ]; then rm -f "$f.pid" "$f.exit" "$f.exit.tmp" "$f.t0" "$f.t1" "$f.sig"; break; fi
  done
  # The command (with its environment) comes on stdin (`-`), so that no
  # value of it is ever on a command line `ps` shows; it is kept in a 0600
  # file that the wrapper runs.
  if [ "$run" = - ]; then
    cat > "$f.cmd" || die "cannot write $f.cmd"
  else
    printf '%s\n' "$run" > "$f.cmd" || die "cannot write $f.cmd"
  fi
  # The wrapper catches (does not ignore) the stop signals so that it lives
  # to write the exit status; the command starts with default dispositions.
  # A signal can reach the command's shell before it has reset the
  # wrapper's traps, and be lost: `signal` writes which one to `$f.sig`
  # before it sends it, and the command's shell, once its traps are reset,
  # ends as that signal would have ended it (128+N) instead of running on.
  wrapper='
    f=$1
    trap : TERM INT HUP QUIT USR1 USR2
    # One write of a few bytes: a reader that sees the file non-empty sees
    # all of it.
    echo $$ > "$f.pid"
    date +%s%N > "$f.t0" 2>/dev/null
    (
      if [ -e "$f.sig" ]; then
        case $(cat "$f.sig") in
          HUP) exit 129 ;; INT) exit 130 ;; QUIT) exit 131 ;; KILL) exit 137 ;;
          USR1) exit 138 ;; USR2) exit 140 ;; *) exit 143 ;;
        esac
      fi
      umask "$2"; exec sh "$f.cmd"
    ) > "$f.out" 2> "$f.err" < /dev/null
    s=$?
    date +%s%N > "$f.t1" 2>/dev/null
    echo $s > "$f.exit.tmp" && mv "$f.exit.tmp" "$f.exit"
  '
  # Started in the foreground where setsid can fork by itself: a `&` job of
  # a non-interactive shell has INT and QUIT ignored, for good (no trap can
  # undo that), and a step stopped with INT (perf) would never see it.
  if [ -z "${setsid_forks-}" ]; then
    if setsid --help 2>&1 | grep -q -e --fork; then setsid_forks=yes; else setsid_forks=no; fi
  fi
  if [ "$setsid_forks" = yes ]; then
    setsid -f sh -c "$wrapper" flow-step "$f" "$step_umask" < /dev/null > /dev/null 2>&1
  else
    setsid sh -c "$wrapper" flow-step "$f" "$step_umask" < /dev/null > /dev/null 2>&1 &
  fi
  i=0
  while [ ! -s "$f.pid" ]; do
    i=$((i + 1))
    [ $i -le 5000 ] || die "the step did not start"
    sleep 0.002
  done
  first_line "$f.pid"
  proc_state "$val"
  echo "${pstate#* }" > "$f.st"
  echo "$val"
}

# Both output files, each as `out N` / `err N` and then N bytes, and the
# host's wall clock (ns) at the command's start and end (`t0`, `t1`) when
# they were read.
cmd_logs() {
  for e in out err; do
    p="$1/.flow/$2.$e"
    if [ -s "$p" ]; then
      echo "$e $(wc -c < "$p" | tr -d ' ')"
      cat "$p"
    else
      echo "$e 0"
    fi
  done
  # One line of digits each: counted without a program.
  for e in t0 t1; do
    first_line "$1/.flow/$2.$e"
    [ -n "$val" ] && printf '%s %s\n%s\n' "$e" "$((${#val} + 1))" "$val"
  done
  return 0
}

# Prints what FILE gained past OFF as a NAME frame; prints nothing else.
grown() { # FILE NAME OFF -> sets $size
  size=$(wc -c < "$1" 2>/dev/null | tr -d ' ')
  size=${size:-0}
  if [ "$size" -gt "$3" ]; then
    echo "$2 $((size - $3))"
    tail -c "+$(($3 + 1))" "$1" | head -c "$((size - $3))"
  else
    size=$3
  fi
}

cmd_follow() {
  [ $# -eq 2 ] || die "usage: follow DIR ID"
  f="$1/.flow/$2"
  oo=0 eo=0
  while :; do
    # Whether it had ended is read first, so that the last pass takes
    # everything it wrote.
    fin=0
    if [ -s "$f.exit" ]; then
      fin=1
    elif ! leader_alive "$f"; then
      fin=1
    fi
    grown "$f.out" out "$oo"
    oo=$size
    grown "$f.err" err "$eo"
    eo=$size
    [ "$fin" = 1 ] && return 0
    sleep 0.2
  done
}

status_one() {
  f="$1/.flow/$2"
  first_line "$f.exit"
  if [ -n "$val" ]; then
    echo "$2 exited $val"
  elif [ ! -s "$f.pid" ]; then
    echo "$2 unknown"
  elif leader_alive "$f"; then
    echo "$2 running"
  else
    # It may have ended between the two looks.
    first_line "$f.exit"
    if [ -n "$val" ]; then echo "$2 exited $val"; else echo "$2 gone"; fi
  fi
}

cmd_status() {
  [ $# -ge 2 ] || die "usage: status DIR ID..."
  dir=$1
  shift
  for id in "$@"; do status_one "$dir" "$id"; done
}

# One flow at a time in a workdir on a machine: `.flow/lock.<host name>/`
# (mkdir is atomic) holds its owner, `CONTROLLER ARTIFACT`. The host name is
# part of it because a workdir in a home shared over NFS is the same folder
# on every node of a cluster.
# In a Slurm job step, the node's Slurm name (unique in its cluster).
lock_dir() { echo "$FLOW_WORKDIR/.flow/lock.${SLURMD_NODENAME:-$(uname -n)}"; }

cmd_lock() {
  [ $# -eq 1 ] || die "usage: lock OWNER"
  umask 077
  l=$(lock_dir)
  if mkdir "$l" 2>/dev/null; then
    printf '%s\n' "$1" > "$l/owner.tmp" && mv "$l/owner.tmp" "$l/owner"
    return 0
  fi
  holder=$(cat "$l/owner" 2>/dev/null)
  [ "$holder" = "$1" ] && return 0
  printf '%s\n' "${holder:-? being taken}"
  exit 4
}

cmd_unlock() {
  [ $# -eq 1 ] || die "usage: unlock OWNER"
  l=$(lock_dir)
  [ "$(cat "$l/owner" 2>/dev/null)" = "$1" ] && rm -rf "$l"
  return 0
}

# A step's environment (`export K=V` lines, on stdin) for its `ready.cmd`
# probe, in a 0600 file.
cmd_env() {
  [ $# -eq 2 ] || die "usage: env DIR ID"
  umask 077
  mkdir -p "$1/.flow" || die "cannot create $1/.flow"
  cat > "$1/.flow/$2.env" || die "cannot write $1/.flow/$2.env"
}

cmd_read() {
  [ $# -eq 4 ] || die "usage: read DIR ID OUT_OFF ERR_OFF"
  f="$1/.flow/$2"
  grown "$f.out" out "$3"
  grown "$f.err" err "$4"
}

cmd_probe_port() {
  [ $# -eq 1 ] || die "usage: probe-port PORT"
  hex=$(printf '%04X' "$1")
  # /proc/net/tcp*: local address is field 2 (ADDR:PORT in hex), state field 4 (0A = LISTEN).
  awk -v p=":$hex" 'toupper(substr($2, length($2) - 4)) == p && $4 == "0A" { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Every environment file of a process (not this one) holding VAR=VALUE.
env_files() {
  # Whether grep reads NUL-separated records: looked up once per agent.
  if [ -z "${grep_z-}" ]; then
    if printf 'a\0' | grep -qz a 2>/dev/null; then grep_z=yes; else grep_z=no; fi
  fi
  if [ "$grep_z" = yes ]; then
    # One grep over every environment (NUL-separated entries).
    files=$(grep -lzxF -e "$1" /proc/[0-9]*/environ 2>/dev/null || true)
  else
    files=""
    for e in /proc/[0-9]*/environ; do
      tr '\0' '\n' < "$e" 2>/dev/null | grep -qxF -e "$1" && files="$files $e"
    done
  fi
  for e in $files; do
    [ "$e" = "/proc/$$/environ" ] || echo "$e"
  done
}

env_value() { # FILE VAR
  tr '\0' '\n' < "$1" 2>/dev/null | sed -n "s/^$2=//p" | head -n 1
}

# The process group of a pid (field 3 after the command name in /proc/PID/stat).
pgid_of() {
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  st=${st##*) }
  echo "$st" | cut -d' ' -f3
}

cmd_reap() {
  [ $# -ge 1 ] || die "usage: reap VAR=VALUE..."
  first=$1
  shift
  # A process may fork while it is being killed: look again until a pass
  # finds nothing (at most 5 passes). Each one's process group goes too.
  pass=0
  while [ $pass -lt 5 ]; do
    pass=$((pass + 1))
    found=0
    for e in $(env_files "$first"); do
      ok=1
      for more in "$@"; do
        tr '\0' '\n' < "$e" 2>/dev/null | grep -qxF -e "$more" || ok=0
      done
      [ $ok = 1 ] || continue
      p=${e#/proc/}
      p=${p%/environ}
      g=$(pgid_of "$p")
      if kill -s KILL "$p" 2>/dev/null; then
        echo "$p"
        found=1
      fi
      [ -n "$g" ] && [ "$g" != "$(pgid_of $$)" ] && kill -s KILL -- "-$g" 2>/dev/null
    done
    [ $found = 1 ] || break
  done
  return 0
}

cmd_leftovers() {
  [ $# -eq 0 ] || die "usage: leftovers"
  for e in $(env_files "FLOW_WORKDIR=$FLOW_WORKDIR"); do
    c=$(env_value "$e" FLOW_CONTROLLER)
    [ -n "$c" ] || continue
    p=${e#/proc/}
    echo "${p%/environ} $c $(env_value "$e" FLOW_ARTIFACT_ID) $(env_value "$e" FLOW_RUN_DIR)"
  done
  return 0
}

# What is left of step $2's process group (the wrapper has ended) is
# killed, one `PID COMMAND LINE` line per process in a `leaks` frame; then
# the step's logs, as `logs` prints them.
cmd_finish() {
  [ $# -eq 2 ] || die "usage: finish DIR ID"
  f="$1/.flow/$2"
  first_line "$f.pid"
  pid=$val
  if [ -n "$pid" ] && ! leader_alive "$f" && live_group "$pid"; then
    leaks=""
    for p in $(group_pids "$pid"); do
      c=$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)
      leaks="$leaks$p $c
"
    done
    kill -s KILL -- "-$pid" 2>/dev/null
    i=0
    while live_group "$pid" && [ $i -lt 250 ]; do sleep 0.02; i=$((i + 1)); done
    echo "leaks $(printf '%s' "$leaks" | wc -c | tr -d ' ')"
    printf '%s' "$leaks"
  fi
  cmd_logs "$1" "$2"
}

# The live (not zombie) members of process group $1.
group_pids() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$1" '{
      p = $1; s = $0; sub(/^.*\) /, "", s); split(s, f, " ");
      if (f[3] == g && f[1] != "Z") print p
    }'
}

# SIG to step $2's process group, while its wrapper runs; prints `sent`, or
# `none` when the wrapper has ended (what is left of its group is killed by
# `finish`, never signalled by a number that may have been reused).
cmd_signal() {
  [ $# -eq 3 ] || die "usage: signal DIR ID SIG"
  f="$1/.flow/$2"
  first_line "$f.pid"
  pid=$val
  [ -n "$pid" ] || die "no step $2 in $1"
  # Written first: see `cmd_start`.
  leader_alive "$f" && printf '%s\n' "$3" > "$f.sig"
  if leader_alive "$f" && kill -s "$3" -- "-$pid" 2>/dev/null; then
    echo sent
  else
    echo none
  fi
}

# The agent: one long-lived session that serves requests, one per line, so
# that each costs a round trip instead of an ssh session. A request is
# `RID INPUT COMMAND ARGS...` as shell words; INPUT is `-` (no input) or
# `=` and the input in printf %b escapes. The answer is
# `R RID STATUS OUT_LEN ERR_LEN`, then that many bytes of stdout and stderr,
# then a newline.
# Steps never depend on the agent: they run under setsid.
cmd_agent() {
  own=no
  [ "${1-}" = --own-steps ] && { own=yes; shift; }
  [ $# -eq 0 ] || die "usage: agent [--own-steps]"
  umask 077
  # The answer's scratch files, in a folder of this agent's alone. Not named
  # by the pid only: a workdir shared over NFS is seen by agents on many
  # nodes (or in many pid namespaces) that may have the same pid, and one
  # agent writing into another's files would answer with the wrong bytes.
  # mkdir is atomic: the first free name is this agent's.
  n=0
  while :; do
    t="$FLOW_WORKDIR/.flow/agent.$(uname -n).$$.$n"
    mkdir "$t" 2>/dev/null && break
    n=$((n + 1))
    [ $n -lt 1000 ] || die "cannot create a folder $FLOW_WORKDIR/.flow/agent.*"
  done
  trap 'rm -rf "$t"' EXIT
  started="$t/started"
  t="$t/a"
  if [ "$own" = yes ]; then
    # TERM to each step's group, KILL to what is left 2 s later (Slurm's
    # KillWait is longer than that by default).
    trap 'stop_own; exit 0' HUP TERM
  else
    trap 'exit 0' HUP TERM
  fi
  # Looked up once: each request runs in a subshell of its own.
  if setsid --help 2>&1 | grep -q -e --fork; then setsid_forks=yes; else setsid_forks=no; fi
  if printf 'a\0' | grep -qz a 2>/dev/null; then grep_z=yes; else grep_z=no; fi
  echo "flow-agent 1"
  while IFS= read -r line; do
    eval "set -- $line"
    [ $# -ge 3 ] || { printf 'R 0 2 0 0\n\n'; continue; }
    rid=$1 input=$2
    shift 2
    # The clock probe, 16 times a run on every host: one program, no
    # files, one write.
    if [ "$1" = now ] && [ $# -eq 1 ] && [ "$input" = - ]; then
      v=$(date +%s%N)
      printf 'R %s 0 %s 0\n%s\n\n' "$rid" $((${#v} + 1)) "$v"
      continue
    fi
    # The steps this agent starts, for stop_own: listed before they start,
    # so that a TERM that comes while one starts still finds it.
    [ "$own" = yes ] && [ "$1" = start ] && [ $# -ge 3 ] && printf '%s/.flow/%s\n' "$2" "$3" >> "$started"
    if [ "$input" = - ]; then
      ( dispatch "$@" ) > "$t.o" 2> "$t.e" < /dev/null
    else
      printf '%b' "${input#=}" | ( dispatch "$@" ) > "$t.o" 2> "$t.e"
    fi
    rc=$?
    # Most answers are short and have no stderr: no program is started
    # for what is empty.
    lo=0 le=0
    [ -s "$t.o" ] && lo=$(wc -c < "$t.o")
    [ -s "$t.e" ] && le=$(wc -c < "$t.e")
    # A newline ends every answer: a channel that passes on whole lines
    # only (srun's) passes it at once, and flow checks it is there. Each
    # answer is one write: srun carries every write as a message of its
    # own, and a second small one waits for the first's acknowledgement
    # (40 ms, Nagle's algorithm against delayed ACKs).
    if [ "$lo" = 0 ] && [ "$le" = 0 ]; then
      printf 'R %s %s 0 0\n\n' "$rid" "$rc"
    else
      { printf 'R %s %s %s %s\n' "$rid" "$rc" $lo $le; cat "$t.o" "$t.e"; echo; } > "$t.a"
      cat "$t.a"
    fi
  done
}

# The steps this agent started that still run: TERM to each one's group,
# then KILL to what is left. A second first: Slurm ends a job by sending
# TERM to every task at once, flow (the batch script) included, which then
# records its runs as interrupted before their steps end; a step that ended
# first would count as failed.
stop_own() {
  [ -s "$started" ] || return 0
  sleep 1
  groups=""
  while IFS= read -r f; do
    leader_alive "$f" || continue
    first_line "$f.pid"
    printf 'TERM\n' > "$f.sig"
    kill -s TERM -- "-$val" 2>/dev/null && groups="$groups $val"
  done < "$started"
  [ -n "$groups" ] || return 0
  i=0
  while [ $i -lt 20 ]; do
    alive=""
    for g in $groups; do alive_group "$g" && alive="$alive $g"; done
    [ -n "$alive" ] || return 0
    sleep 0.1
    i=$((i + 1))
  done
  for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
  return 0
}

# A step's run dir (0700), and with CACHE the workload's files copied into
# it from the content-addressed cache; exit 5 when CACHE is not there yet.
cmd_prepare() {
  [ $# -eq 1 ] || [ $# -eq 2 ] || die "usage: prepare DIR [CACHE]"
  umask 077
  if [ $# -eq 2 ] && [ ! -d "$2" ]; then
    echo "$2 is not on this host yet" >&2
    exit 5
  fi
  mkdir -p "$1" || exit 1
  [ $# -eq 1 ] || cp -R "$2/." "$1/"
}

dispatch() {
  [ $# -ge 1 ] || die "usage: helper.sh agent|start|status|signal|finish|prepare|now|script|logs|follow|read|env|lock|unlock|probe-port|reap|leftovers ..."
  what=$1
  shift
  case $what in
    agent) cmd_agent "$@" ;;
    start) cmd_start "$@" ;;
    status) cmd_status "$@" ;;
    signal) cmd_signal "$@" ;;
    finish) cmd_finish "$@" ;;
    logs) [ $# -eq 2 ] || die "usage: logs DIR ID"; cmd_logs "$@" ;;
    follow) cmd_follow "$@" ;;
    read) cmd_read "$@" ;;
    env) cmd_env "$@" ;;
    lock) cmd_lock "$@" ;;
    unlock) cmd_unlock "$@" ;;
    probe-port) cmd_probe_port "$@" ;;
    prepare) cmd_prepare "$@" ;;
    now) date +%s%N ;;
    script) sh -s ;;
    reap) cmd_reap "$@" ;;
    leftovers) cmd_leftovers "$@" ;;
    *) die "unknown command: $what" ;;
  esac
}

dispatch "$@"

#!/usr/bin/env bash
# start-sge.sh - install and start a throw-away Grid Engine (Debian's gridengine 8.1.9) on this
# one machine (Debian 12 "bookworm", run as root, no systemd): one qmaster, one execd, one queue
# with a few slots and a parallel environment for multi-slot jobs. Idempotent: a second run with
# the same settings only re-checks the running cluster; changed settings are applied in place.
#
# Usage:  bash start-sge.sh [start|stop|status]      (default: start)
#
# Settings (environment):
#   SGE_QUEUE=all.q   name of the queue (default: PILOT_TEST_SGE_QUEUE in sge.env)
#   SGE_SLOTS=4       slots of this host in the queue (may exceed the real CPU count)
#   SGE_PE=smp        parallel environment, $pe_slots: all of a job's slots on one host
#                     (default: PILOT_TEST_SGE_PE in sge.env)
#   SGE_VERIFY=1      after a (re)start or a change, submit a 2-slot job and print its latency
#
# Clients need nothing in their environment: Debian's /usr/bin/q* wrappers default to
# SGE_ROOT=/var/lib/gridengine SGE_CELL=default (tests/infra/sge.env, for tools that ask).
#
# Host names are Grid Engine's classic trap in containers: qmaster compares the name a client
# claims with the name its IP address resolves to. Here 127.0.0.1 resolves to "localhost" while
# the host calls itself "vm", so the script maps the one onto the other in
# $SGE_ROOT/$SGE_CELL/common/host_aliases (only when they differ).
set -euo pipefail

ACTION=${1:-start}
# shellcheck source=sge.env
. "$(dirname "$0")/sge.env"   # SGE_ROOT, SGE_CELL, and the queue and PE the tests look for
export SGE_ROOT SGE_CELL
QUEUE=${SGE_QUEUE:-$PILOT_TEST_SGE_QUEUE}
SLOTS=${SGE_SLOTS:-4}
PE=${SGE_PE:-$PILOT_TEST_SGE_PE}
VERIFY=${SGE_VERIFY:-1}
COMMON=$SGE_ROOT/$SGE_CELL/common
UTIL=/usr/lib/gridengine
QMASTER_PID=/var/spool/gridengine/qmaster/qmaster.pid
EXECD_SPOOL=/var/spool/gridengine/execd

T0=$(date +%s.%N)
log() { printf '[start-sge %6.2fs] %s\n' "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "$*"; }
die() { log "ERROR: $*"; for f in /var/spool/gridengine/qmaster/messages "$EXECD_SPOOL"/*/messages; do
          [ -f "$f" ] && { echo "--- tail $f"; tail -n 15 "$f"; }; done; exit 1; }
[ "$(id -u)" = 0 ] || { echo "start-sge.sh must run as root" >&2; exit 1; }
fresh=0   # set when this run started or changed something: only then the smoke job runs
note() { log "$*"; fresh=1; }

# --- daemons by the PIDs in their pid files (checking each PID is still that program) ----------
pid_of() {  # pidfile comm -> prints the PID when that daemon runs
  local pid; pid=$(cat "$1" 2>/dev/null || true)
  if [ -n "$pid" ] && [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; then echo "$pid"; fi
}
stop_pids() {  # comm pidfile...: TERM them all, wait up to 20 s (qmaster's controlled shutdown
  local comm=$1 pf pid pids=""; shift                       # takes ~5 s), then KILL what is left
  for pf in "$@"; do
    pid=$(pid_of "$pf" "$comm"); [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; pids="$pids $pid"; }
    rm -f "$pf"
  done
  for pid in $pids; do
    for _ in $(seq 1 200); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
  return 0
}
stop_pidfile() { stop_pids "$2" "$1"; }
stop_all() {  # both at once: each takes seconds to stop
  # the execd's spool directory is named as it resolves itself ("localhost" here): all of them
  stop_pids sge_execd "$EXECD_SPOOL"/*/execd.pid & stop_pids sge_qmaster "$QMASTER_PID"; wait
}
run() { local out; out=$("$@" 2>&1) || die "$* failed: $out"; }   # quiet unless it fails
qmaster_up() { [ -n "$(pid_of "$QMASTER_PID" sge_qmaster)" ] && qconf -sh >/dev/null 2>&1; }

case "$ACTION" in
  stop)   [ -d "$SGE_ROOT" ] && stop_all; log "stopped"; exit 0 ;;
  status) qstat -f -u '*' || true; qconf -sq "$QUEUE" 2>/dev/null | grep -E '^(hostlist|slots|pe_list)' || true
          exit 0 ;;
  start)  ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

# --- 1. host name: must resolve; Grid Engine's name for it -------------------------------------
HOST=$(hostname)
getent hosts "$HOST" >/dev/null || { echo "127.0.0.1 $HOST" >> /etc/hosts; log "added $HOST to /etc/hosts"; }

# --- 2. packages (debconf preseeded: cell "default", this host as master, cluster initialised) ---
PKGS="gridengine-master gridengine-exec gridengine-client"
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
  log "installing:$missing"
  for p in gridengine-common $PKGS; do
    printf '%s shared/%s\n' "$p" "gridengineconfig boolean true" "$p" "gridenginecell string $SGE_CELL" \
      "$p" "gridenginemaster string $HOST"
  done | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  # the packages' init scripts must not start daemons: this script starts them
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  apt-get update -qq >/dev/null || true
  out=$(apt-get install -y -qq --no-install-recommends $missing 2>&1) || rc=$?
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "${rc:-0}" = 0 ] || { printf '%s\n' "$out" | tail -n 20; die "apt-get install failed"; }
  log "packages installed"
else
  log "packages already installed"
fi
[ -f "$COMMON/bootstrap" ] || die "$COMMON/bootstrap missing: the cluster was not initialised (purge the packages and rerun)"

# Grid Engine's own name for this host, and the names its address resolves back to (without
# host_aliases applied). A loopback address (127.0.1.1, say) is reached from 127.0.0.1, so that
# address's name ("localhost") must mean this host too.
ME=$("$UTIL/gethostname" -name 2>/dev/null || true)
[ -n "$ME" ] || ME=$HOST
ADDR=$(getent hosts "$ME" | awk '{print $1; exit}')
case "$ADDR" in 127.*) addrs="$ADDR 127.0.0.1" ;; *) addrs=$ADDR ;; esac
BACK=""
for a in $addrs; do
  n=$("$UTIL/gethostbyaddr" -name "$a" 2>/dev/null || true)
  case " $ME $BACK " in *" $n "*) ;; *) [ -n "$n" ] && BACK="${BACK:+$BACK }$n" ;; esac
done
changed=0
write_if_different() {  # file content -> writes it (sgeadmin-owned) when different; sets changed=1
  if [ "$(cat "$1" 2>/dev/null || true)" != "$2" ]; then
    printf '%s\n' "$2" > "$1"; chown sgeadmin:sgeadmin "$1"; chmod 644 "$1"; changed=1
  fi
}
if [ -n "$BACK" ]; then
  write_if_different "$COMMON/host_aliases" "$ME $BACK"
else
  [ -e "$COMMON/host_aliases" ] && { rm -f "$COMMON/host_aliases"; changed=1; }
fi
write_if_different "$COMMON/act_qmaster" "$ME"

# --- 3. qmaster ------------------------------------------------------------------------------------
install -d -o sgeadmin -g sgeadmin /run/gridengine
if [ "$changed" = 1 ] && [ -n "$(pid_of "$QMASTER_PID" sge_qmaster)" ]; then
  stop_all; note "host names changed ($ME${BACK:+, also known as $BACK}): restarting"
fi
if ! qmaster_up; then
  stop_pidfile "$QMASTER_PID" sge_qmaster   # one that runs but does not answer
  /usr/sbin/sge_qmaster || die "sge_qmaster did not start"
  end=$((SECONDS + 20)); until qconf -sh >/dev/null 2>&1 || [ "$SECONDS" -ge "$end" ]; do sleep 0.1; done
  qconf -sh >/dev/null 2>&1 || die "qmaster does not answer: $(qconf -sh 2>&1 | head -2 | tr '\n' ' ')"
  note "sge_qmaster started (pid $(cat "$QMASTER_PID"))"
else
  log "sge_qmaster running (pid $(cat "$QMASTER_PID"))"
fi

# --- 4. configuration (each piece applied only when it differs) --------------------------------
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
restart_execd=0
# global: jobs of root and system users (min_uid/min_gid 1000 by default); a job's end or qdel
# kills every process of the job, also those in their own process group or session (the agent's
# units), found by the job's additional group id (ENABLE_ADDGRP_KILL); accounting written at
# once (qacct tells Done from Failed right after a job ends); load reports every 5 s
conf_ok() { qconf -sconf global | tr -s ' ' | awk '/^min_uid 0$/{n++} /^min_gid 0$/{n++} /^load_report_time 00:00:05$/{n++}
  /^execd_params ENABLE_ADDGRP_KILL=TRUE$/{n++} /accounting_flush_time=00:00:00/{n++} END{exit n != 5}'; }
if ! conf_ok; then
  qconf -sconf global | grep -v '^#' | sed -e ':a' -e '/\\$/N; s/\\\n */ /; ta' | sed -E \
    -e 's/^(min_uid|min_gid)( +).*/\1\20/' -e 's/^(load_report_time +).*/\100:00:05/' \
    -e 's/^(execd_params +).*/\1ENABLE_ADDGRP_KILL=TRUE/' \
    -e 's/^(reporting_params +).*/\1accounting=true reporting=false flush_time=00:00:01 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:00/' \
    > "$TMP/global"   # the file's name is the configuration's name
  run qconf -Mconf "$TMP/global"
  conf_ok || die "global configuration not applied: $(qconf -sconf global | tr '\n' ';')"
  restart_execd=1; note "global configuration updated"
fi
# scheduler: every second, and right after a submit or a job's end
qconf -ssconf > "$TMP/sconf"
sed -E -e 's/^(schedule_interval +).*/\10:0:1/' -e 's/^(flush_submit_sec +).*/\11/' \
  -e 's/^(flush_finish_sec +).*/\11/' "$TMP/sconf" > "$TMP/sched"
cmp -s "$TMP/sconf" "$TMP/sched" || { run qconf -Msconf "$TMP/sched"; note "scheduler updated"; }
# root (and the user who ran sudo) may manage the cluster
qconf -sm 2>/dev/null | grep -qx root || run qconf -am root
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
  qconf -sm 2>/dev/null | grep -qx "$SUDO_USER" || run qconf -am "$SUDO_USER"
fi
# this host: admin, submit and execution host
qconf -sh 2>/dev/null | grep -qx "$ME" || run qconf -ah "$ME"
qconf -ss 2>/dev/null | grep -qx "$ME" || run qconf -as "$ME"
if ! qconf -sel 2>/dev/null | grep -qx "$ME"; then
  printf 'hostname %s\nload_scaling NONE\ncomplex_values NONE\nuser_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\nusage_scaling NONE\nreport_variables NONE\n' \
    "$ME" > "$TMP/exechost"
  run qconf -Ae "$TMP/exechost"
fi
# the parallel environment: all of a job's slots on one host
cat > "$TMP/$PE" <<EOF
pe_name            $PE
slots              9999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$pe_slots
control_slaves     TRUE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
if ! qconf -sp "$PE" >/dev/null 2>&1; then run qconf -Ap "$TMP/$PE"; note "parallel environment $PE created"
elif ! cmp -s <(qconf -sp "$PE" | tr -s ' ') <(tr -s ' ' < "$TMP/$PE"); then run qconf -Mp "$TMP/$PE"; fi
# the queue: SLOTS slots on this host, no load threshold (a busy CI machine must not close it)
cat > "$TMP/$QUEUE" <<EOF
qname $QUEUE
hostlist $ME
seq_no 0
load_thresholds NONE
suspend_thresholds NONE
nsuspend 1
suspend_interval 00:05:00
priority 0
min_cpu_interval 00:05:00
processors UNDEFINED
qtype BATCH INTERACTIVE
ckpt_list NONE
pe_list $PE
rerun FALSE
slots $SLOTS
tmpdir /tmp
shell /bin/sh
prolog NONE
epilog NONE
shell_start_mode posix_compliant
starter_method NONE
suspend_method NONE
resume_method NONE
terminate_method NONE
notify 00:00:60
owner_list NONE
user_lists NONE
xuser_lists NONE
subordinate_list NONE
complex_values NONE
projects NONE
xprojects NONE
calendar NONE
initial_state default
s_rt INFINITY
h_rt INFINITY
s_cpu INFINITY
h_cpu INFINITY
s_fsize INFINITY
h_fsize INFINITY
s_data INFINITY
h_data INFINITY
s_stack INFINITY
h_stack INFINITY
s_core INFINITY
h_core INFINITY
s_rss INFINITY
h_rss INFINITY
s_vmem INFINITY
h_vmem INFINITY
EOF
if ! qconf -sq "$QUEUE" >/dev/null 2>&1; then run qconf -Aq "$TMP/$QUEUE"
  note "queue $QUEUE created"
elif ! cmp -s <(qconf -sq "$QUEUE" | tr -s ' ') <(tr -s ' ' < "$TMP/$QUEUE"); then
  run qconf -Mq "$TMP/$QUEUE"; note "queue $QUEUE updated"
fi

# --- 5. execd ------------------------------------------------------------------------------------
execd_pid() { local pf; for pf in "$EXECD_SPOOL"/*/execd.pid; do pid_of "$pf" sge_execd; done | head -n 1; }
if [ "$restart_execd" = 1 ]; then stop_pids sge_execd "$EXECD_SPOOL"/*/execd.pid; fi
if [ -z "$(execd_pid)" ]; then
  run /usr/sbin/sge_execd
  for _ in $(seq 1 50); do [ -n "$(execd_pid)" ] && break; sleep 0.1; done
  note "sge_execd started (pid $(execd_pid))"
else
  log "sge_execd running (pid $(execd_pid))"
fi

# --- 6. wait until the queue instance takes jobs ---------------------------------------------------
ok=0; end=$((SECONDS + 30))
while [ "$SECONDS" -lt "$end" ]; do
  # "all.q@vm  BIP  0/0/4  0.50  lx-amd64  [states]": usable when it has a load and no state
  line=$(qstat -f -q "$QUEUE" 2>/dev/null | awk -v q="$QUEUE@$ME" '$1 == q' || true)
  if [ -n "$line" ]; then
    states=$(awk '{print $6}' <<<"$line")
    load=$(awk '{print $4}' <<<"$line")
    [ -z "$states" ] && [ "$load" != "-NA-" ] && { ok=1; break; }
    # an error or disabled state left from an earlier run: clear it
    case "$states" in *E*) qmod -c "$QUEUE@$ME" >/dev/null 2>&1 || true ;; esac
    case "$states" in *d*) qmod -e "$QUEUE@$ME" >/dev/null 2>&1 || true ;; esac
  fi
  sleep 0.1
done
[ "$ok" = 1 ] || die "queue $QUEUE@$ME not usable after 30 s: $(qstat -f 2>&1 | tr '\n' ';')"
log "queue up: $(qstat -f -q "$QUEUE" | awk -v q="$QUEUE@$ME" '$1 == q {print $1, $3 " slots (resv/used/tot)"}')"

# --- 7. smoke test -------------------------------------------------------------------------------------
if [ "$VERIFY" = 1 ] && [ "$fresh" = 1 ]; then
  dir=$(mktemp -d)
  t=$(date +%s.%N)
  timeout 120 qsub -sync y -b y -q "$QUEUE" -pe "$PE" 2 -wd "$dir" -o "$dir/out" -j y -N sge-smoke hostname >/dev/null 2>&1 ||
    die "smoke job failed: $(cat "$dir/out" 2>/dev/null)"
  lat=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
  log "smoke job (2 slots) done in ${lat}s on $(cat "$dir/out")"
  rm -rf "$dir"
fi
log "done (QUEUE=$QUEUE SLOTS=$SLOTS PE=$PE; SGE_ROOT=$SGE_ROOT SGE_CELL=$SGE_CELL)"

#!/usr/bin/env bash
# services.sh - start (or stop, or show) every real service the test suite uses: a SLURM cluster
# of three fake nodes, a key-only sshd on 127.0.0.1:2222, a redis-server on 127.0.0.1:6390 and a
# Grid Engine (qmaster + execd, queue all.q with 4 slots; clients need no environment, see sge.env);
# and the tools the UI tests drive (tmux, Debian's chromium) and a C compiler (install-tools.sh).
# Needs root and Debian packages; without root it says so and starts nothing (the tests that need a
# service then skip, except under CI=true, where they fail).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ACTION=${1:-start}
if [ "$(id -u)" != 0 ]; then
  echo "services.sh: not root; starting no services (tests that need them will skip)" >&2
  exit 0
fi
export SLURM_NODES=${SLURM_NODES:-3} SLURM_CPUS=${SLURM_CPUS:-4}
case "$ACTION" in
  start)
    export DEBIAN_FRONTEND=noninteractive
    bash "$here/start-slurm.sh" start
    bash "$here/start-sshd.sh" start
    bash "$here/start-redis.sh" start
    bash "$here/start-sge.sh" start
    bash "$here/install-tools.sh" ;;
  stop)
    bash "$here/start-slurm.sh" stop || true
    bash "$here/start-sshd.sh" stop || true
    bash "$here/start-redis.sh" stop || true
    bash "$here/start-sge.sh" stop || true ;;
  status)
    bash "$here/start-slurm.sh" status || true
    bash "$here/start-sge.sh" status || true
    [ -f "$here/test-services.env" ] && . "$here/test-services.env"
    for svc in "sshd ${PILOT_TEST_SSHD_PORT:-2222}" "redis ${PILOT_TEST_REDIS_PORT:-6390}"; do
      set -- $svc
      if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then echo "$1: listening on 127.0.0.1:$2"
      else echo "$1: nothing on 127.0.0.1:$2"; fi
    done ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

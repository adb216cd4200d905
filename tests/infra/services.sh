#!/usr/bin/env bash
# services.sh - start (or stop) every real service the test suite uses: a SLURM cluster of three
# fake nodes, a key-only sshd on 127.0.0.1:2222 and a redis-server on 127.0.0.1:6390.
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
    bash "$here/start-redis.sh" start ;;
  stop)
    bash "$here/start-slurm.sh" stop || true
    bash "$here/start-sshd.sh" stop || true
    bash "$here/start-redis.sh" stop || true ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac

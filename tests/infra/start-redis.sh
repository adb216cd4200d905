#!/usr/bin/env bash
# start-redis.sh - a throw-away redis-server on 127.0.0.1 for the tests (Debian, root).
# Usage: bash start-redis.sh [start|stop]. Settings: REDIS_DIR=/tmp/ci-redis REDIS_PORT=6390
# REDIS_PASSWORD (default: a fixed test password). Append-only file on, so a restart loses nothing.
set -euo pipefail
ACTION=${1:-start}
# shellcheck source=test-services.env
. "$(dirname "$0")/test-services.env"   # where the tests look for this server
DIR=${REDIS_DIR:-$(dirname "$PILOT_TEST_REDIS_PASSWORD_FILE")}
PORT=${REDIS_PORT:-$PILOT_TEST_REDIS_PORT}
PASSWORD=${REDIS_PASSWORD:-ci-redis-secret}
[ "$(id -u)" = 0 ] || { echo "start-redis.sh must run as root" >&2; exit 1; }
pid_of() { local pid; pid=$(cat "$DIR/redis.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -q '^redis' "/proc/$pid/comm"; then echo "$pid"; fi; }
stop() { local pid; pid=$(pid_of); if [ -n "$pid" ]; then kill "$pid"
  for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done; fi; rm -f "$DIR/redis.pid"; }
case "$ACTION" in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
if ! command -v redis-server >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
install -d -m 700 "$DIR"
if [ -z "$(pid_of)" ]; then
  redis-server --bind 127.0.0.1 --port "$PORT" --daemonize yes --pidfile "$DIR/redis.pid" --dir "$DIR" \
    --save '' --appendonly yes --requirepass "$PASSWORD" --logfile "$DIR/redis.log"
  for _ in $(seq 1 100); do redis-cli -p "$PORT" -a "$PASSWORD" --no-auth-warning ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
fi
redis-cli -p "$PORT" -a "$PASSWORD" --no-auth-warning ping | grep -q PONG || { echo "redis did not start" >&2; exit 1; }
printf '%s\n' "$PASSWORD" > "$DIR/password"; chmod 600 "$DIR/password"
echo "redis on 127.0.0.1:$PORT (password in $DIR/password)"

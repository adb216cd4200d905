#!/usr/bin/env bash
# install-tools.sh - the terminal and browser tools that the UI tests drive: tmux (a terminal whose
# screen the tests read, for `pilot watch` and the progress display of wait()) and Debian's
# chromium (headless, to open the HTML timeline), and a C compiler with the C library's headers (the
# agent's native spawner is built on first use). Installs only what is missing; needs root.
set -euo pipefail
missing=""
command -v tmux >/dev/null || missing="$missing tmux"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v cc >/dev/null || missing="$missing gcc"
[ -e /usr/include/stdio.h ] || missing="$missing libc6-dev"
[ -z "$missing" ] && { echo "install-tools: tmux, chromium and cc present"; exit 0; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
out=$(apt-get install -y -qq --no-install-recommends $missing 2>&1) || { printf '%s\n' "$out" | tail -n 20; exit 1; }
echo "install-tools: installed$missing"

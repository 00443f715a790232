#!/usr/bin/env bash
# Stops what start.sh DIR started: both processes, or only the one named.
#   integration/apiserver/stop.sh DIR [kube-apiserver|etcd]
# DIR and the etcd data stay; start.sh DIR starts them again.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 DIR [kube-apiserver|etcd]" >&2
  exit 2
fi
dir=$1

# Is the process of pid file $1 alive and running $2 (not a reused pid, not a zombie)?
running() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  grep -q "$2" "/proc/$pid/cmdline" 2>/dev/null && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$pid/stat"
}

# SIGTERM, then SIGKILL after 10 s.
stop() {
  local pidfile=$dir/$1.pid
  if running "$pidfile" "$1"; then
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 100); do running "$pidfile" "$1" || break; sleep 0.1; done
    if running "$pidfile" "$1"; then kill -KILL "$(cat "$pidfile")" 2>/dev/null || true; fi
    for _ in $(seq 50); do running "$pidfile" "$1" || break; sleep 0.1; done
  fi
  rm -f "$pidfile"
}

case ${2:-all} in
  all) stop kube-apiserver && stop etcd ;;
  kube-apiserver | etcd) stop "$2" ;;
  *)
    echo "$0: unknown process $2" >&2
    exit 2
    ;;
esac

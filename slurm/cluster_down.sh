#!/bin/bash
# Stop the single-node cluster started by slurm/cluster_up.sh (by the pid files in its state dir), and remove the dir.
# Usage: slurm/cluster_down.sh [STATE_DIR] [--keep]
set -uo pipefail
STATE=${1:-${MANIFLOW_SLURM_DIR:-/tmp/maniflow_slurm}}
stop() {  # stop the process of pid file $1, waiting up to 10 s
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1")
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}
if [ -f "$STATE/slurm.conf" ]; then SLURM_CONF="$STATE/slurm.conf" scancel --full -u root 2>/dev/null || true; fi
stop "$STATE/slurmd.pid"; stop "$STATE/slurmctld.pid"; stop "$STATE/munged.pid"
[ "${2:-}" = --keep ] || rm -rf "$STATE"
echo "cluster_down: stopped ($STATE)"

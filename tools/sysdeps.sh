#!/usr/bin/env bash
# Install the system packages the tests need, if missing: EGL/OSMesa for offscreen MuJoCo rendering and a
# single-node SLURM (slurmctld, slurmd, slurm-client, munge) for the real-cluster tests, and headless Chromium for
# tests/test_browser.py (the static dashboard page loaded in a browser).
set -u
need=()
ldconfig -p | grep -q 'libEGL.so.1 ' || need+=(libegl1)
ldconfig -p | grep -q 'libOSMesa' || need+=(libosmesa6)
ldconfig -p | grep -q 'libGL.so.1 ' || need+=(libgl1)
# a real single-node SLURM cluster for tests/test_slurm.py (slurm/cluster_up.sh)
for p in slurmctld slurmd munge; do command -v $p >/dev/null || need+=($p); done
command -v sbatch >/dev/null || need+=(slurm-client)
# a headless browser for tests/test_browser.py
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "sysdeps: installing ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >/dev/null \
    || echo "sysdeps: apt-get failed; MuJoCo rendering / SLURM / browser tests may fail or skip" >&2
else
  echo "sysdeps: missing ${need[*]}; install them (e.g. sudo apt-get install ${need[*]})" >&2
fi
exit 0

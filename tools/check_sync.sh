#!/usr/bin/env bash
# Fail if nbdev_export or nbdev_clean changes any file: the notebooks and the package must already agree.
set -euo pipefail
snap() { find nbs maniflow_nb -type f \( -name '*.py' -o -name '*.ipynb' \) -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha1sum; }
before=$(snap)
.venv/bin/nbdev_export
.venv/bin/nbdev_clean
after=$(snap)
if [ "$before" != "$after" ]; then
  echo "nbdev_export/nbdev_clean changed these files (commit the result):"
  diff <(echo "$before") <(echo "$after") | grep '^[<>]' | awk '{print $3}' | sort -u
  exit 1
fi
.venv/bin/python tools/readme.py --check
.venv/bin/python tools/bench_page.py --check
echo "export-check: notebooks, package and README in sync"

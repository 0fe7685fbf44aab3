#!/usr/bin/env bash
# Installs the independent reflection client's npm packages (pinned in package-lock.json) with
# retries: the registry sometimes refuses connections for a minute.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
# npm writes node_modules/.package-lock.json after a complete install.
if [[ node_modules/.package-lock.json -nt package-lock.json ]]; then
  exit 0
fi
delay=2
for try in 1 2 3 4 5 6; do
  if npm ci --no-audit --no-fund --loglevel=error; then exit 0; fi
  echo "reflection/install.sh: npm ci failed (try $try); retrying in ${delay}s" >&2
  sleep "$delay"
  delay=$(( delay * 2 > 60 ? 60 : delay * 2 ))
done
echo "reflection/install.sh: npm ci kept failing" >&2
exit 1

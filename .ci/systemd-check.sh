#!/usr/bin/env bash
# Checks systemd/cosell-sync.service: `systemd-analyze verify` passes and
# `systemd-analyze security` rates its exposure at most 2.0.
# Installs systemd's tools first if this machine lacks them (CI runs as root on Debian).
set -euo pipefail
cd "$(dirname "$0")/.."

UNIT=${1:-systemd/cosell-sync.service}
MAX_EXPOSURE=2.0

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "== installing systemd (for systemd-analyze)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
systemd-analyze --version | head -n 1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# verify needs ExecStart's binary to exist: check a copy that runs a stand-in.
printf '#!/bin/sh\nexit 0\n' >"$work/cosell-sync"
chmod 0755 "$work/cosell-sync"
mkdir -p "$work/unit"
sed "s#^ExecStart=/usr/local/bin/cosell-sync #ExecStart=$work/cosell-sync #" "$UNIT" >"$work/unit/cosell-sync.service"
if ! grep -q "^ExecStart=$work/cosell-sync " "$work/unit/cosell-sync.service"; then
    echo "ExecStart in $UNIT does not start with /usr/local/bin/cosell-sync" >&2
    exit 1
fi

echo "== systemd-analyze verify $UNIT"
if ! out=$(systemd-analyze verify "$work/unit/cosell-sync.service" 2>&1) || [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    echo "systemd-analyze verify reported problems in $UNIT" >&2
    exit 1
fi
echo "ok"

echo "== systemd-analyze security --offline=yes $UNIT"
# --threshold counts tenths (20 = 2.0); the score is also checked below.
status=0
systemd-analyze security --offline=yes --threshold=20 --no-pager \
    "$work/unit/cosell-sync.service" >"$work/security.txt" 2>&1 || status=$?
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9]*\.[0-9]\).*/\1/p' "$work/security.txt" | tail -n 1)
if [ -z "$score" ]; then
    cat "$work/security.txt" >&2
    echo "could not read the exposure level" >&2
    exit 1
fi
if [ "$status" -ne 0 ] || awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s > m) }'; then
    grep -E '✗' "$work/security.txt" >&2 || true
    echo "exposure level $score is above $MAX_EXPOSURE" >&2
    exit 1
fi
echo "exposure level $score (at most $MAX_EXPOSURE): ok"

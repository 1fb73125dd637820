#!/usr/bin/env bash
# Checks the systemd units: the single service systemd/cosell-sync.service and
# the per-tenant template systemd/cosell-sync@.service (as instance "acme").
# For each, `systemd-analyze verify` passes and `systemd-analyze security`
# rates its exposure at most 2.0.
# Installs systemd's tools first if this machine lacks them (CI runs as root on Debian).
set -euo pipefail
cd "$(dirname "$0")/.."

UNITS=("$@")
[ "${#UNITS[@]}" -gt 0 ] || UNITS=(systemd/cosell-sync.service systemd/cosell-sync@.service)
MAX_EXPOSURE=2.0
BIN=/usr/bin/cosell-sync

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

check() {
    local unit=$1 name dir loaded
    name=$(basename "$unit")
    dir="$work/unit-${name%.service}"
    mkdir -p "$dir"
    sed "s#^ExecStart=$BIN #ExecStart=$work/cosell-sync #" "$unit" >"$dir/$name"
    if ! grep -q "^ExecStart=$work/cosell-sync " "$dir/$name"; then
        echo "ExecStart in $unit does not start with $BIN" >&2
        exit 1
    fi
    # A template is checked as one of its instances.
    loaded="$dir/${name/@.service/@acme.service}"

    echo "== systemd-analyze verify $unit"
    local out
    if ! out=$(cd "$dir" && systemd-analyze verify "$loaded" 2>&1) || [ -n "$out" ]; then
        printf '%s\n' "$out" >&2
        echo "systemd-analyze verify reported problems in $unit" >&2
        exit 1
    fi
    echo "ok"

    echo "== systemd-analyze security --offline=yes $unit"
    # --threshold counts tenths (20 = 2.0); the score is also checked below.
    local status=0 score
    (cd "$dir" && systemd-analyze security --offline=yes --threshold=20 --no-pager "$loaded") \
        >"$dir/security.txt" 2>&1 || status=$?
    score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9]*\.[0-9]\).*/\1/p' "$dir/security.txt" | tail -n 1)
    if [ -z "$score" ]; then
        cat "$dir/security.txt" >&2
        echo "could not read the exposure level of $unit" >&2
        exit 1
    fi
    if [ "$status" -ne 0 ] || awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s > m) }'; then
        grep -E '✗' "$dir/security.txt" >&2 || true
        echo "exposure level of $unit is $score, above $MAX_EXPOSURE" >&2
        exit 1
    fi
    echo "exposure level $score (at most $MAX_EXPOSURE): ok"
}

for unit in "${UNITS[@]}"; do
    check "$unit"
done

#!/usr/bin/env bash
# Builds the Debian package (cargo-deb, metadata in Cargo.toml) and checks
# that it holds what an operator needs: the binary, both systemd units, the
# example settings, the shipped mappings, the docs, the alert rules and
# dashboard, the completions and the manual page.
#
#   packaging/build-deb.sh            # → $CARGO_TARGET_DIR/debian/cosell-sync_<version>-1_<arch>.deb
#
# cargo-deb is installed into .tools/ (not committed) the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
TOOLS=.tools
target=${CARGO_TARGET_DIR:-target}

if [ ! -x "$TOOLS/bin/cargo-deb" ]; then
    echo "== installing cargo-deb $CARGO_DEB_VERSION into $TOOLS/"
    cargo install --locked --root "$TOOLS" --version "$CARGO_DEB_VERSION" cargo-deb
fi

echo "== cargo build --release --locked"
cargo build --release --locked

echo "== completions and manual page"
assets="$target/release/cosell-sync-assets"
mkdir -p "$assets"
bin="$target/release/cosell-sync"
"$bin" completions bash >"$assets/cosell-sync.bash"
"$bin" completions zsh >"$assets/_cosell-sync"
"$bin" completions fish >"$assets/cosell-sync.fish"
"$bin" manpage | gzip -9n >"$assets/cosell-sync.1.gz"

echo "== cargo deb"
deb=$("$TOOLS/bin/cargo-deb" --no-build --locked -o "$target/debian" | tail -n 1)
echo "$deb"

echo "== contents (dpkg-deb -c)"
listing=$(dpkg-deb -c "$deb")
printf '%s\n' "$listing"
missing=0
for path in \
    ./usr/bin/cosell-sync \
    ./usr/lib/systemd/system/cosell-sync.service \
    ./usr/lib/systemd/system/cosell-sync@.service \
    ./usr/share/doc/cosell-sync/examples/cosell-sync.toml \
    ./usr/share/cosell-sync/mappings/dynamics.toml \
    ./usr/share/cosell-sync/mappings/salesforce.toml \
    ./usr/share/doc/cosell-sync/README.md \
    ./usr/share/doc/cosell-sync/install.md \
    ./usr/share/doc/cosell-sync/operations.md \
    ./usr/share/doc/cosell-sync/mapping-guide.md \
    ./usr/share/cosell-sync/prometheus/alerts.yml \
    ./usr/share/cosell-sync/grafana/cosell-sync.json \
    ./usr/share/bash-completion/completions/cosell-sync \
    ./usr/share/zsh/vendor-completions/_cosell-sync \
    ./usr/share/fish/vendor_completions.d/cosell-sync.fish \
    ./usr/share/man/man1/cosell-sync.1.gz; do
    if ! grep -qE " ${path//./\\.}\$" <<<"$listing"; then
        echo "missing from the package: $path" >&2
        missing=1
    fi
done
# Nothing under /etc: settings and secrets are the operator's.
if grep -qE ' \./etc/' <<<"$listing"; then
    echo "the package must not ship files under /etc" >&2
    missing=1
fi

echo "== maintainer scripts"
control=$(mktemp -d)
trap 'rm -rf "$control"' EXIT
dpkg-deb -e "$deb" "$control"
if grep -nE 'systemctl +(start|restart|enable|--now)|deb-systemd-invoke|deb-systemd-helper' "$control"/post* "$control"/pre* 2>/dev/null; then
    echo "a maintainer script starts or enables a unit" >&2
    missing=1
fi
grep -q 'systemctl daemon-reload' "$control/postinst" || { echo "postinst does not reload systemd" >&2; missing=1; }

echo "== the packaged binary runs"
dpkg-deb -x "$deb" "$control/root"
"$control/root/usr/bin/cosell-sync" --version
zcat "$control/root/usr/share/man/man1/cosell-sync.1.gz" | grep -q '^\.TH cosell-sync 1' \
    || { echo "the manual page is not cosell-sync(1)" >&2; missing=1; }

[ "$missing" -eq 0 ] || exit 1
echo "ok: $deb"

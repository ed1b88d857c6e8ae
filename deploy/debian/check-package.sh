#!/usr/bin/env bash
# Builds the Debian package (cargo deb), installs it with dpkg -i, runs `check-config` and
# `demo --duration 10` from the installed binary as the `walrus` user, checks the unit with
# systemd-analyze, then purges the package and checks that it left nothing behind.
# Run as root on a Debian machine (CI does: .ci/run). Needs cargo-deb
# (`cargo install cargo-deb --locked`); installs it when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb"
    cargo install cargo-deb --locked --quiet
fi
echo "== cargo deb -p walrus-node --dbgsym"
deb=$(cargo deb -p walrus-node --locked --dbgsym 2>&1 | tee /dev/stderr | grep -E '\.deb$' | tail -1)
[ -f "$deb" ] || { echo "no .deb built"; exit 1; }
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"

cleanup() { dpkg --purge walrus-node >/dev/null 2>&1 || true; }
trap cleanup EXIT
echo "== dpkg -i $deb"
dpkg -i "$deb"
test "$(command -v walrus-node)" = /usr/bin/walrus-node
getent passwd walrus >/dev/null || { echo "no walrus user"; exit 1; }
test -d /var/lib/walrus
test "$(stat -c %U /var/lib/walrus)" = walrus
dpkg-query -W -f='${Conffiles}\n' walrus-node | grep -q /etc/walrus/walrus.toml
if command -v systemd-analyze >/dev/null; then
    # Syntax and hardening of the unit (an instance name is needed for a template).
    cp /lib/systemd/system/walrus-node@.service /tmp/walrus-node@check.service
    # (ExecStart's binary exists now; only the missing instance config could complain.)
    systemd-analyze verify /tmp/walrus-node@check.service
    systemd-analyze security --offline=yes /tmp/walrus-node@check.service 2>/dev/null | tail -1 || true
    rm -f /tmp/walrus-node@check.service
fi

echo "== walrus-node check-config (installed)"
runuser -u walrus -- /usr/bin/walrus-node check-config --config /etc/walrus/walrus.toml
echo "== walrus-node demo --duration 10 (installed)"
out=$(cd /var/lib/walrus && runuser -u walrus -- /usr/bin/walrus-node demo --duration 10 --dashboard 127.0.0.1:0 2>&1)
echo "$out" | tail -20
echo "$out" | grep -q "round" || { echo "the demo ran no round"; exit 1; }

echo "== dpkg --purge walrus-node"
trap - EXIT
dpkg --purge walrus-node
for p in /usr/bin/walrus-node /etc/walrus /var/lib/walrus /lib/systemd/system/walrus-node@.service; do
    if [ -e "$p" ]; then echo "purge left $p behind"; exit 1; fi
done
if getent passwd walrus >/dev/null; then echo "purge left the walrus user"; exit 1; fi
echo "debian package: built, installed, ran, purged"

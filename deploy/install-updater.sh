#!/bin/sh
# Installs lxdocker-update on an LXD or Incus host (not the converter's host): a venv
# in /opt/lxdocker-update and the resident service, which follows daemon events and
# checks every hour. Idempotent; run as root. `--timer` installs the hourly
# one-shot timer instead of the resident service.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
[ -x /opt/lxdocker-update/bin/python ] || python3 -m venv /opt/lxdocker-update
/opt/lxdocker-update/bin/pip install -q "$src"
ln -sf /opt/lxdocker-update/bin/lxdocker-update /usr/local/bin/lxdocker-update
install -m 0644 "$src/deploy/lxdocker-update.service" "$src/deploy/lxdocker-update-once.service" \
    "$src/deploy/lxdocker-update-once.timer" /etc/systemd/system/
systemctl daemon-reload
if [ "${1:-}" = "--timer" ]; then
    systemctl enable --now lxdocker-update-once.timer
else
    systemctl enable --now lxdocker-update.service
fi
echo "opt containers in with: lxc config set NAME user.lxdocker.update=true"

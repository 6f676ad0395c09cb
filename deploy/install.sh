#!/bin/sh
# Installs lxdocker + imgserver from this source tree as systemd services:
# a venv in /opt/lxdocker, a system user, directories, a private CA and certificate,
# the job's timer and the server. Idempotent; run as root (on a host or inside
# the container made with deploy/lxd-profile.yaml).
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
apt-get install -y -q python3-venv squashfs-tools-ng busybox-static xz-utils >/dev/null
id lxdocker >/dev/null 2>&1 || useradd --system --home-dir /var/lib/lxdocker --shell /usr/sbin/nologin lxdocker
[ -x /opt/lxdocker/bin/python ] || python3 -m venv /opt/lxdocker
/opt/lxdocker/bin/pip install -q "$src"
ln -sf /opt/lxdocker/bin/lxdocker /usr/local/bin/lxdocker
ln -sf /opt/lxdocker/bin/imgserver /usr/local/bin/imgserver
install -d -o lxdocker -g lxdocker /var/cache/lxdocker /var/lib/lxdocker /var/lib/lxdocker/images
install -d /etc/lxdocker/specs /etc/lxdocker/tls
if [ ! -f /etc/lxdocker/tls/server.crt ]; then
    /usr/local/bin/imgserver gencert --out /etc/lxdocker/tls --san "$(hostname)" --san localhost --san 127.0.0.1
fi
chown -R lxdocker:lxdocker /etc/lxdocker/tls
install -m 0644 "$src/deploy/lxdocker.service" "$src/deploy/lxdocker.timer" "$src/deploy/imgserver.service" /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now imgserver.service lxdocker.timer
if [ -f /etc/lxdocker/tls/ca.crt ]; then
    echo "imgserver runs on :443; LXD/Incus hosts pin /etc/lxdocker/tls/ca.crt"
else
    # An install from before the CA: docs/imgserver.md "Renewing the certificate" moves it safely.
    echo "imgserver runs on :443; LXD/Incus hosts pin /etc/lxdocker/tls/server.crt (self-signed)"
fi

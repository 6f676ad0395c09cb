#!/usr/bin/env bash
# Builds the bundled sample: a tiny web app image, made offline from this host's
# static busybox, as an OCI image layout that specs/hello.yaml refers to
# (image: oci:sample/hello:latest). Tools: umoci, busybox-static.
#
# The app is busybox httpd serving /www as the unprivileged user "www", with an
# environment variable, a working directory and a stop signal, like a real image.
set -euo pipefail
out=${1:-$(dirname "$0")/hello}
busybox=${BUSYBOX:-/bin/busybox}
[ -f "$out/index.json" ] && { echo "sample already built: $out"; exit 0; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/layout"
umoci new --image "$work/layout:latest"
umoci unpack --rootless --image "$work/layout:latest" "$work/bundle" >/dev/null
root=$work/bundle/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/www" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for app in sh httpd cat ls ps id env; do ln -s busybox "$root/bin/$app"; done
printf 'root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/www:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nwww:x:33:\n' > "$root/etc/group"
cat > "$root/www/index.html" <<'HTML'
<!doctype html>
<title>hello from lxdocker</title>
<h1>Hello from a Docker image running in LXD</h1>
<p>Served by busybox httpd, converted by lxdocker.</p>
HTML
umoci repack --image "$work/layout:latest" "$work/bundle" >/dev/null
umoci config --image "$work/layout:latest" \
    --config.entrypoint /bin/httpd \
    --config.cmd -f --config.cmd -p --config.cmd 80 --config.cmd -h --config.cmd /www \
    --config.user www --config.workingdir /www \
    --config.env GREETING=hello --config.env PATH=/bin \
    --config.stopsignal SIGTERM \
    --author lxdocker --history.comment "bundled sample"
umoci gc --layout "$work/layout"
mkdir -p "$(dirname "$out")"
rm -rf "$out"
mv "$work/layout" "$out"
echo "sample built: $out"

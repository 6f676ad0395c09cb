#!/usr/bin/env bash
# Adds Debian bookworm-backports to APT (Incus 6.0 comes from there), using the same
# mirror as the machine's own bookworm entry, so no host name is hard-coded here.
# Idempotent: does nothing when a backports entry already exists.
set -euo pipefail
shopt -s nullglob
if grep -qs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources; then
    exit 0
fi
uri=""
for f in /etc/apt/sources.list.d/*.sources; do
    # deb822: the URIs line of the stanza whose Suites include plain "bookworm".
    uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ {for (i=2; i<=NF; i++) if ($i=="bookworm") {print u; exit}}' "$f")
    [ -n "$uri" ] && break
done
if [ -z "$uri" ]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' "$f")
        [ -n "$uri" ] && break
    done
fi
if [ -z "$uri" ]; then
    echo "enable-backports: no bookworm entry found in APT's sources" >&2
    exit 1
fi
cat > /etc/apt/sources.list.d/bookworm-backports.sources <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
echo "enable-backports: added bookworm-backports from $uri"

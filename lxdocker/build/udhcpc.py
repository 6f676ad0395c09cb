"""The udhcpc event script our init hands to busybox udhcpc (docs/design.md section 6).

Our own, with the shebang `#!/busybox-lxd sh`, because the image may have no shell
and no script of its own (distroless), and busybox's default script path
(/usr/share/udhcpc/default.script) may hold the image's content.
"""

from __future__ import annotations

from lxdocker.build.initscript import BUSYBOX


def render_udhcpc_script() -> str:
    """busybox udhcpc calls this with $1 = event and the lease in the environment."""
    return _UDHCPC.replace("@BB@", BUSYBOX)


# The text below is part of every image's bytes: its "DESIGN section 6" (the old
# name of docs/design.md section 6) stays, since editing it would change every
# image's fingerprint (tests/test_golden.py) and make every client download again.
_UDHCPC = r"""#!@BB@ sh
# udhcpc event script written by lxdocker (DESIGN section 6): configures the
# address, default route and DNS of $interface from the lease in the environment.
bb=@BB@
case "$1" in
deconfig)
	$bb ip link set dev "$interface" up
	$bb ip -4 addr flush dev "$interface"
	;;
bound|renew)
	# A renew with the same address must not drop the address (and connections).
	if ! $bb ip -4 addr show dev "$interface" | $bb grep -q "inet $ip/$mask "; then
		$bb ip -4 addr flush dev "$interface"
		$bb ip -4 addr add "$ip/$mask" ${broadcast:+broadcast "$broadcast"} dev "$interface"
	fi
	for r in $router; do
		$bb ip -4 route replace default via "$r" dev "$interface"
		break
	done
	if [ -n "$dns" ]; then
		$bb mkdir -p /etc
		tmp=/etc/.resolv.conf.lxd-udhcpc
		{
			[ -n "$domain" ] && echo "search $domain"
			for s in $dns; do echo "nameserver $s"; done
		} >"$tmp" && $bb mv -f "$tmp" /etc/resolv.conf
	fi
	;;
esac
exit 0
"""

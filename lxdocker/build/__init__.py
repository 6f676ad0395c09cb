"""How a root filesystem is made (DESIGN section 2, middle stage).

Layer tars are read strictly, flattened exactly as `umoci unpack` would (plan,
then one streaming pass), patched so the image boots as a container (init,
busybox, DHCP script) and written as squashfs or tar, and as LXC's rootfs.tar.xz.
"""

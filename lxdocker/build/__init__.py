"""How a root filesystem is made (docs/design.md section 2, middle stage).

Layers (read strictly by lxdocker/tar/) are flattened exactly as `umoci unpack`
would (plan, then one streaming pass), patched so the image boots as a container
(init, the busybox the job hands over, DHCP script) and written as squashfs or tar,
and in the same pass as LXC's rootfs.tar.xz and the OCI bundle. Build reads what
sources fetched and never imports from publish (docs/design.md section 10).
"""

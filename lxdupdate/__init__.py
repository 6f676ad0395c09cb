"""lxdocker-update: keep LXD/Incus containers on the newest version of their image.

It runs on the LXD or Incus host (not beside the converter) and talks to the daemon's
REST API over its unix socket. docs/design.md section 14 has the API facts it relies on.
"""

"""What gets published (docs/design.md section 2, last stage).

LXD's and LXC's metadata tarballs, xdelta3 deltas against earlier versions, and
the image store: version directories, atomic publishing, pruning. The contract
with imgserver is lxdocker.versioninfo. Then copies of what imgserver serves
(imgserver.site) on S3 or in a directory: targets (--publish-to), mirror (the
order and grace that keep caching clients working), s3target and dirtarget.
"""

"""The foundation under the three stages: tar streams and path rules.

Sources, build and publish all read or write tar: `header` and `reader` read layer
tars strictly, `stream` is the entry stream that flows from the flattener to the
writers, `writer` serialises it to one or more tars in one pass, `paths` holds the
rules for entry names (canonical form, whiteouts, what LXD, LXC and squashfs can
hold) and `layerindex` a layer's header index. Nothing here knows about images,
registries or versions (docs/design.md section 10).
"""

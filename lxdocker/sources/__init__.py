"""Where images come from (docs/design.md section 2, first stage).

Image references, registries and local OCI layouts / docker archives, the
verified content-addressed blob cache, layer blobs as uncompressed tar streams
with their header indexes (lxdocker/tar/layerindex.py).
"""

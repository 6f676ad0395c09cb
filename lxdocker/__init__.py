"""lxdocker: convert Docker/OCI images into LXD images."""

__version__ = "0.1.0"

# Bumped whenever the conversion recipe changes the bytes of an image (init script,
# patching, metadata, writer options): a new recipe makes the batch job rebuild.
RECIPE_VERSION = 3  # 2: Docker's environment (issue 16); 3: /lxd-volumes (issue 20)

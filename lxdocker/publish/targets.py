"""`--publish-to`: copies of what imgserver serves, on S3 or in a directory.

A target is `s3://BUCKET[/PREFIX][?OPTIONS]`, a directory path, or
`file:///PATH[?OPTIONS]`. Options (URL query, `&`-separated):
* `endpoint=URL`, `region=NAME`, `profile=NAME`, `path-style=true|false` (S3 only;
  unset, boto3 takes them from AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE and
  ~/.aws/config as usual);
* `url=URL`: where clients reach the copy (the landing page's commands); default
  for S3 `ENDPOINT/BUCKET/PREFIX`, for a directory `https://localhost`;
* `ca=FILE`: the CA certificate hosts pin (`imgserver gencert`'s ca.crt), copied as
  `ca.crt`; without it the landing page assumes a certificate from a public CA;
* `remote=NAME`: the remote name in the landing page's commands (lxdocker).

The copy is built from the image directory by imgserver's own catalog and site
model (imgserver.site), so index.json and images.json are byte for byte what
imgserver would serve for the same directory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from imgserver import site
from imgserver.catalog import Catalog, Snapshot
from lxdocker.errors import LxdockerError, PublishError
from lxdocker.publish.dirtarget import DirectoryTarget
from lxdocker.publish.mirror import Item, Outcome, Target, mirror
from lxdocker.publish.s3target import S3Options, S3Target

log = logging.getLogger(__name__)

S3_OPTIONS = frozenset({"endpoint", "region", "profile", "path-style"})
COMMON_OPTIONS = frozenset({"url", "ca", "remote"})
BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass(frozen=True)
class TargetSpec:
    text: str  # as given, for messages
    s3: S3Options | None = None
    directory: Path | None = None
    url: str = ""
    ca: Path | None = None
    remote: str = "lxdocker"

    @property
    def name(self) -> str:
        """How logs and the summary name it (no options)."""
        return self.s3.name if self.s3 is not None else str(self.directory)

    @property
    def public_url(self) -> str:
        if self.url:
            return self.url.rstrip("/")
        if self.s3 is not None and self.s3.endpoint:
            return "/".join(
                p for p in (self.s3.endpoint.rstrip("/"), self.s3.bucket, self.s3.prefix) if p
            )
        if self.s3 is not None:
            return f"https://{self.s3.bucket}.s3.amazonaws.com/{self.s3.prefix}".rstrip("/")
        return "https://localhost"

    def open(self) -> Target:
        if self.s3 is not None:
            return S3Target(self.s3)
        assert self.directory is not None
        return DirectoryTarget(self.directory)


def parse_target(text: str) -> TargetSpec:
    """Raises PublishError naming the value and what is wrong with it."""
    if "://" not in text:
        if not text:
            raise PublishError("--publish-to: empty target")
        return TargetSpec(text, directory=Path(text))
    parts = urlsplit(text)
    try:
        options = dict(
            parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        )
    except ValueError:
        raise PublishError(
            f"--publish-to {text}: cannot read the options {parts.query!r}"
        ) from None
    allowed = COMMON_OPTIONS | (S3_OPTIONS if parts.scheme == "s3" else frozenset())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise PublishError(
            f"--publish-to {text}: unknown option {unknown[0]!r}"
            f" (one of {', '.join(sorted(allowed))})"
        )
    ca = Path(options["ca"]) if options.get("ca") else None
    if ca is not None and not ca.is_file():
        raise PublishError(f"--publish-to {text}: ca={ca}: no such file")
    url, remote = options.get("url", ""), options.get("remote") or "lxdocker"
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise PublishError(f"--publish-to {text}: expected file:///PATH")
        return TargetSpec(text, directory=Path(parts.path), url=url, ca=ca, remote=remote)
    if parts.scheme != "s3":
        raise PublishError(
            f"--publish-to {text}: expected s3://BUCKET/PREFIX, a directory or file:///PATH"
        )
    if not parts.netloc:
        raise PublishError(f"--publish-to {text}: no bucket name")
    path_style = None
    if "path-style" in options:
        value = options["path-style"].lower() or "true"
        if value not in BOOLEANS:
            raise PublishError(f"--publish-to {text}: path-style must be true or false")
        path_style = BOOLEANS[value]
    s3 = S3Options(
        bucket=parts.netloc,
        prefix="/".join(p for p in parts.path.split("/") if p),
        endpoint=options.get("endpoint") or None,
        region=options.get("region") or None,
        profile=options.get("profile") or None,
        path_style=path_style,
    )
    return TargetSpec(text, s3=s3, url=url, ca=ca, remote=remote)


def site_items(snapshot: Snapshot, spec: TargetSpec) -> list[Item]:
    """Everything the copy holds, in the order it is written: the catalog's files,
    then the pages in site order (imgserver.site)."""
    certs = site.static_certs(spec.ca) if spec.ca is not None else None
    items = [
        Item(path, f.size, f.sha256, site.FILE_CONTENT_TYPE, site.FILE_CACHE_CONTROL, file=f.path)
        for path, f in snapshot.files.items()
    ]
    versions = snapshot.versions
    # The template's literal spelling of the index too: the target decides whether
    # that is a name of its own (mirror.Target.holds).
    pages = site.unfolded(
        {
            **site.server_pages(versions, spec.public_url, spec.remote, certs),
            **site.catalog_pages(versions),
        }
    )
    items += [
        Item.of_bytes(path, p.body, p.content_type, p.cache_control) for path, p in pages.items()
    ]
    return items


def publish_all(lxdimages: Path, specs: Sequence[TargetSpec], grace: float) -> list[Outcome]:
    """Copy the image directory's site to every target; a failing target fails alone."""
    if not specs:
        return []
    catalog = Catalog(lxdimages)
    catalog.refresh()
    outcomes = []
    for spec in specs:
        try:
            target = spec.open()
            outcome = mirror(target, site_items(catalog.snapshot, spec), grace)
        except LxdockerError as e:
            error = str(e).removeprefix(f"{spec.name}: ")
            log.error("publish %s: %s", spec.name, error)
            outcomes.append(Outcome(spec.name, error=error))
            continue
        log.info(
            "publish %s: %d uploaded (%d bytes), %d unchanged, %d deleted, %d unlisted",
            spec.name,
            outcome.uploaded,
            outcome.uploaded_bytes,
            outcome.unchanged,
            outcome.deleted,
            outcome.waiting,
        )
        outcomes.append(outcome)
    return outcomes

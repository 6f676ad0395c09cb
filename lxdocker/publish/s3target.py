"""A publish target that is an S3 bucket (AWS, R2, MinIO, Ceph RGW, rclone serve s3).

boto3 does the protocol: request signing, credentials the usual AWS way (the
environment, ~/.aws/credentials and ~/.aws/config, a profile), endpoint and
addressing style from the config file too, retries with exponential backoff on
throttling, 5xx and connection errors (botocore's "standard" mode), and
multipart uploads of large files with a bounded number of bounded parts
(s3transfer). Each object carries its sha256 as user metadata (`x-amz-meta-sha256`)
and the headers imgserver would send (Content-Type, Cache-Control).

Keys with an empty segment (`prefix//meta/1.0/index-system`, what LXC's download
template asks for: imgserver.site.unfolded): AWS S3 and moto store them, rclone
and MinIO refuse them (400; minio/minio#5874). Whether this server does is asked
once per run, with a GET, before any PUT of such a key (holds), because rclone
never answers that PUT (it waits for the body without sending 100 Continue, boto3
waits for the 100 Continue before sending the body). A server that refuses gets
one warning per run, and the copy goes on without those keys.

Checksums: boto3 >= 1.36 sends a CRC trailer in aws-chunked encoding with every
upload by default, which many S3 implementations refuse (rclone answers
MissingContentLength; older MinIO and Ceph too): checksums only where the
operation requires them. TLS protects the bytes in transit, and the sha256 in the
metadata and the listings lets anyone check them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxdocker.errors import PublishError
from lxdocker.publish.mirror import Item

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

# Files of MULTIPART_PARTS parts and more go up in parts of PART_SIZE, PART_THREADS
# at a time: memory stays near PART_THREADS * PART_SIZE whatever the file's size.
MULTIPART_PARTS = 4
PART_SIZE = 16 * 1024 * 1024
PART_THREADS = 4
# botocore's standard retry mode: exponential backoff with jitter, capped at 20 s.
MAX_ATTEMPTS = 6
# Hints for the errors a refusing target gives (codes as S3 and boto3 name them).
CREDENTIAL_CODES = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)
CREDENTIAL_HINT = (
    "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
    "~/.aws/credentials, AWS_PROFILE or the target's profile=)"
)


@dataclass(frozen=True)
class S3Options:
    bucket: str
    prefix: str = ""  # no leading or trailing slash
    endpoint: str | None = None  # None: AWS_ENDPOINT_URL(_S3), the config file, or AWS
    region: str | None = None
    profile: str | None = None
    path_style: bool | None = None  # None: the config file's s3.addressing_style

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


class S3Target:
    def __init__(self, options: S3Options, part_size: int = PART_SIZE) -> None:
        self.options = options
        self.name = options.name
        self.part_size = part_size  # and the multipart threshold: four parts
        self._client: S3Client | None = None
        self._empty_segments: bool | None = None  # keys like `p//meta/...` (holds)

    def _key(self, path: str) -> str:
        return f"{self.options.prefix}/{path}" if self.options.prefix else path

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> S3Client:
        try:
            import boto3
            import botocore.config
            from botocore.exceptions import BotoCoreError
        except ImportError:
            raise PublishError(
                f"{self.name}: S3 targets need boto3: pip install 'lxdocker[s3]'"
            ) from None
        o = self.options
        config = botocore.config.Config(
            # None: the config file's s3.addressing_style (or boto3's choice) applies.
            s3=None
            if o.path_style is None
            else {"addressing_style": "path" if o.path_style else "virtual"},
            retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=30,
            read_timeout=120,
        )
        try:
            session = boto3.session.Session(profile_name=o.profile, region_name=o.region)
            if session.get_credentials() is None:
                raise PublishError(f"{self.name}: no AWS credentials found; {CREDENTIAL_HINT}")
            return session.client("s3", endpoint_url=o.endpoint, config=config)
        except BotoCoreError as e:  # an unknown profile, a bad endpoint URL, ...
            raise PublishError(f"{self.name}: {e}") from None

    def _error(self, what: str, e: Exception) -> PublishError:
        from botocore.exceptions import ClientError

        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            message = str(err.get("Message", "")) or code
            if code == "NoSuchBucket":
                hint = f"the bucket {self.options.bucket!r} does not exist"
            elif code in CREDENTIAL_CODES:
                hint = f"access denied ({message}); {CREDENTIAL_HINT}"
            else:
                hint = f"{code}: {message}"
            return PublishError(f"{self.name}: {what}: {hint}")
        return PublishError(f"{self.name}: {what}: {e}")

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (BotoCoreError, ClientError, Boto3Error) as e:
            raise self._error(what, e) from None

    def check(self) -> None:
        self.client  # noqa: B018 - connecting checks the credentials' presence

    def listing(self) -> dict[str, int]:
        o = self.options
        prefix = f"{o.prefix}/" if o.prefix else ""
        out: dict[str, int] = {}

        def walk() -> None:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=o.bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    out[obj["Key"][len(prefix) :]] = obj["Size"]

        self._call("listing", walk)
        return out

    def holds(self, path: str) -> bool:
        if self._empty_segments is None:
            self._empty_segments = self._stores_empty_segments(path)
        return self._empty_segments

    def _stores_empty_segments(self, path: str) -> bool:
        """Asked with a GET of `path`'s key: 404 (or 200) where such keys exist, 400
        where they are refused (rclone: InvalidArgument, MinIO: XMinioInvalidObjectName)."""
        from botocore.exceptions import ClientError

        key = self._key(path)
        try:
            self.client.get_object(Bucket=self.options.bucket, Key=key)["Body"].close()
            return True
        except ClientError as e:
            err = e.response.get("Error", {})
            if err.get("Code") in ("NoSuchKey", "404"):
                return True
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 400:
                raise self._error(f"reading {path}", e) from None
            log.warning(
                "%s: the server refuses object keys with `//` (%s: %s), and LXC's download "
                "template asks for its index under such a key: `lxc-create -t download` "
                "needs a proxy that merges slashes in front of the bucket (nginx does by "
                "default; docs/publishing.md, 'LXC from a bucket'). Everything else is "
                "published; LXD and Incus are not affected.",
                self.name,
                key,
                err.get("Code") or 400,
            )
            return False
        except Exception as e:  # botocore's connection errors, after its retries
            raise self._error(f"reading {path}", e) from None

    def read(self, path: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.options.bucket, Key=self._key(path))
            return resp["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._error(f"reading {path}", e) from None
        except Exception as e:  # botocore's connection errors, after its retries
            raise self._error(f"reading {path}", e) from None

    def put(self, item: Item) -> None:
        extra: dict[str, Any] = {
            "ContentType": item.content_type,
            "Metadata": {"sha256": item.sha256},
        }
        if item.cache_control:
            extra["CacheControl"] = item.cache_control
        bucket, key = self.options.bucket, self._key(item.path)
        if item.body is not None:
            self._call(
                f"uploading {item.path}",
                self.client.put_object,
                Bucket=bucket,
                Key=key,
                Body=item.body,
                **extra,
            )
            return
        from boto3.s3.transfer import TransferConfig

        assert item.file is not None
        transfer = TransferConfig(
            multipart_threshold=MULTIPART_PARTS * self.part_size,
            multipart_chunksize=self.part_size,
            max_concurrency=PART_THREADS,
        )
        self._call(
            f"uploading {item.path}",
            self.client.upload_file,
            str(item.file),
            bucket,
            key,
            ExtraArgs=extra,
            Config=transfer,
        )

    def delete(self, path: str) -> None:
        self._call(
            f"deleting {path}",
            self.client.delete_object,
            Bucket=self.options.bucket,
            Key=self._key(path),
        )

    def cleanup(self) -> None:
        """Abort multipart uploads a killed run left below the prefix: their parts
        are stored (and billed) until then. One writer per target (the job's lock)."""
        from botocore.exceptions import ClientError

        o = self.options
        prefix = f"{o.prefix}/" if o.prefix else ""
        try:
            resp = self.client.list_multipart_uploads(Bucket=o.bucket, Prefix=prefix)
        except ClientError as e:
            # rclone answers NoSuchUpload when there is none; some servers lack the call.
            if e.response.get("Error", {}).get("Code") in ("NoSuchUpload", "NotImplemented"):
                return
            raise self._error("listing unfinished uploads", e) from None
        except Exception as e:
            raise self._error("listing unfinished uploads", e) from None
        for upload in resp.get("Uploads", []):
            log.info("%s: aborting an unfinished upload of %s", self.name, upload["Key"])
            self._call(
                f"aborting the upload of {upload['Key']}",
                self.client.abort_multipart_upload,
                Bucket=o.bucket,
                Key=upload["Key"],
                UploadId=upload["UploadId"],
            )

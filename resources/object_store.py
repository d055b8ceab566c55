"""Object store for images, masks, composites and tables: a local directory or S3 (boto3)."""

from __future__ import annotations

import os
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dagster as dg
from pydantic import PrivateAttr


class InvalidKeyError(ValueError):
    """A key that is absolute or escapes the store (``..``)."""


@dataclass(frozen=True)
class ObjectEntry:
    """One stored object: its key, size in bytes and last-modified time (epoch seconds)."""

    key: str
    size: int
    modified: float


def validate_key(key: str) -> str:
    """Return the normalised key, refusing absolute paths, backslashes and ``..`` segments."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKeyError(f"invalid object key {key!r}")
    parts = key.split("/")
    if any(part in ("..", ".") for part in parts):
        raise InvalidKeyError(f"object key {key!r} must not contain '.' or '..' segments")
    return posixpath.normpath(key)


class ObjectStore(dg.ConfigurableResource):
    """Images and artifacts by key. Local directory by default; S3 when ``bucket`` is set.

    ``endpoint_url`` points boto3 at any S3-compatible server. Keys are '/'-separated paths.
    """

    root: str = ".hitl/objects"
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str = ""
    region_name: str = ""

    _client = PrivateAttr(default=None)

    @classmethod
    def from_env(cls) -> "ObjectStore":
        """Configure from HITL_OBJECT_ROOT, HITL_S3_BUCKET, HITL_S3_PREFIX, HITL_S3_ENDPOINT_URL, AWS_REGION."""
        home = os.environ.get("HITL_HOME", ".hitl")
        return cls(
            root=os.environ.get("HITL_OBJECT_ROOT", os.path.join(home, "objects")),
            bucket=os.environ.get("HITL_S3_BUCKET", ""),
            prefix=os.environ.get("HITL_S3_PREFIX", ""),
            endpoint_url=os.environ.get("HITL_S3_ENDPOINT_URL", ""),
            region_name=os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "")),
        )

    # -- backend helpers ------------------------------------------------------------------

    @property
    def is_s3(self) -> bool:
        """True when objects live in an S3 bucket rather than a local directory."""
        return bool(self.bucket)

    def describe(self) -> str:
        """Human-readable location, for logs and metadata (never includes credentials)."""
        if self.is_s3:
            where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
            return f"{where} (endpoint {self.endpoint_url})" if self.endpoint_url else where
        return str(Path(self.root).resolve())

    def _s3(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url or None,
                region_name=self.region_name or None,
                # Transient errors (throttling, dropped connections) are retried with backoff.
                config=Config(retries={"max_attempts": 8, "mode": "adaptive"}),
            )
        return self._client

    def _s3_key(self, key: str) -> str:
        key = validate_key(key)
        return f"{self.prefix.strip('/')}/{key}" if self.prefix.strip("/") else key

    def local_path(self, key: str) -> Path:
        """Filesystem path of a key in the local backend."""
        if self.is_s3:
            raise RuntimeError("local_path is only available for the local directory backend")
        return Path(self.root) / validate_key(key)

    # -- operations ----------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        """Store ``data`` under ``key`` atomically (readers never see a partial object)."""
        if self.is_s3:
            extra = {"ContentType": content_type} if content_type else {}
            self._s3().put_object(Bucket=self.bucket, Key=self._s3_key(key), Body=data, **extra)
            return key
        path = self.local_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get_bytes(self, key: str) -> bytes:
        """Read the object stored under ``key``; FileNotFoundError naming the key when absent."""
        if self.is_s3:
            client = self._s3()
            try:
                return client.get_object(Bucket=self.bucket, Key=self._s3_key(key))["Body"].read()
            except client.exceptions.NoSuchKey as err:
                raise FileNotFoundError(f"object {key!r} not found in {self.describe()}") from err
        path = self.local_path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as err:
            raise FileNotFoundError(f"object {key!r} not found in {self.describe()}") from err

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        if self.is_s3:
            client = self._s3()
            try:
                client.head_object(Bucket=self.bucket, Key=self._s3_key(key))
                return True
            except client.exceptions.ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return self.local_path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        if self.is_s3:
            self._s3().delete_object(Bucket=self.bucket, Key=self._s3_key(key))
            return
        self.local_path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[ObjectEntry]:
        """Every object under ``prefix`` (recursive), sorted by key."""
        return sorted(self._iter(prefix), key=lambda entry: entry.key)

    def list_folders(self, prefix: str) -> list[str]:
        """Names of the immediate sub-folders of ``prefix`` (like ``ls -d prefix/*/``)."""
        prefix = validate_key(prefix).rstrip("/") + "/"
        if self.is_s3:
            names: set[str] = set()
            paginator = self._s3().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._s3_key(prefix.rstrip("/")) + "/", Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    names.add(common["Prefix"].rstrip("/").rsplit("/", 1)[-1])
            return sorted(names)
        base = Path(self.root) / prefix
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _iter(self, prefix: str) -> Iterator[ObjectEntry]:
        if self.is_s3:
            full = self._s3_key(prefix) if prefix else self.prefix.strip("/")
            strip = len(self.prefix.strip("/")) + 1 if self.prefix.strip("/") else 0
            paginator = self._s3().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", []):
                    yield ObjectEntry(item["Key"][strip:], int(item["Size"]), item["LastModified"].timestamp())
            return
        root = Path(self.root)
        base = root / validate_key(prefix) if prefix else root
        if base.is_file():
            stat = base.stat()
            yield ObjectEntry(validate_key(prefix), stat.st_size, stat.st_mtime)
            return
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue
                path = Path(dirpath) / name
                try:
                    stat = path.lstat()
                except FileNotFoundError:  # vanished between listing and stat
                    continue
                yield ObjectEntry(path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime)

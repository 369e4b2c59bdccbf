"""A storage root given as a URL (``s3://bucket/prefix``, ``gs://…``, ``file:///…``, any fsspec protocol): the
filesystem it lives on, atomic publication of an object, and reads.

Atomic writes: an object is written under a hidden temporary key beside its final one (``.<name>.<host>-<pid>-<rand>
.tmp``), then published by one move: a rename on a filesystem, one server-side ``CopyObject`` on S3 (the copy appears
whole or not at all; the temporary key is deleted after). A reader of the final key therefore never sees half an
object; a writer killed mid-write leaves only a temporary key, which no reader lists (a bucket lifecycle rule on
``.tmp`` suffixes may expire them).

Credentials come only from the environment and the standard configuration files (for S3: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws/credentials``; the endpoint of an S3-compatible server from
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``). A URL that carries credentials is refused, so the URLs stored in the
results database and written in logs never hold one.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from facezoo.errors import FaceZooError

__all__ = ["ObjectStore", "check_no_credentials", "is_url"]

_SECRET_QUERY = {"access_key", "secret_key", "session_token", "aws_access_key_id", "aws_secret_access_key", "token",
                 "password"}


def is_url(root: Any) -> bool:
    """``True`` for ``scheme://…`` (a one-letter scheme is a Windows drive, not a URL)."""
    scheme, sep, _ = str(root).partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()


def check_no_credentials(url: str) -> None:
    """Refuse a URL that carries credentials (user:password@, or a secret in its query), naming it without them."""
    parts = urlsplit(url)
    if parts.username or parts.password or _SECRET_QUERY & {k.lower() for k in parse_qs(parts.query)}:
        raise FaceZooError(f"storage URL {parts.scheme}://{parts.hostname or ''}{parts.path}: remove the credentials "
                           "from the URL; they are read from the environment or the standard configuration files "
                           "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials)")


def _filesystem(url: str) -> pafs.FileSystem:
    parts = urlsplit(url)
    if parts.scheme == "s3":
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        endpoint = (query.get("endpoint_override") or os.environ.get("AWS_ENDPOINT_URL_S3")
                    or os.environ.get("AWS_ENDPOINT_URL"))
        options: dict[str, Any] = {"region": query.get("region") or os.environ.get("AWS_REGION")
                                   or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
        if endpoint:
            scheme, _, host = endpoint.rpartition("://")
            options.update(endpoint_override=host or endpoint, scheme=scheme or "https")
        return pafs.S3FileSystem(**options)
    try:
        return pafs.FileSystem.from_uri(url)[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a protocol pyarrow lacks: through fsspec
        import fsspec

        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(parts.scheme)))


class ObjectStore:
    """The filesystem of ``url``'s scheme (and bucket); objects are named by their full URLs."""

    def __init__(self, url: str):
        check_no_credentials(url)
        self.scheme = urlsplit(url).scheme
        try:
            self.fs = _filesystem(url)
        except (pa.ArrowException, ImportError, ValueError) as error:
            raise FaceZooError(f"cannot open storage URL {url}: {error}") from None

    def key(self, url: str) -> str:
        """The filesystem path of ``url`` (``s3://bucket/a/b`` → ``bucket/a/b``; ``file:///x`` → ``/x``)."""
        parts = urlsplit(url)
        if parts.scheme != self.scheme:
            raise FaceZooError(f"{url} is not a {self.scheme}:// URL")
        return f"{parts.netloc}{parts.path}" if parts.netloc and parts.scheme != "file" else parts.path

    def exists(self, url: str) -> bool:
        return self.fs.get_file_info(self.key(url)).type == pafs.FileType.File

    def read_bytes(self, url: str) -> bytes:
        """The whole object, in one request: one version of it, even while it is being replaced."""
        with self.fs.open_input_stream(self.key(url)) as stream:
            return stream.read()

    def open(self, url: str) -> pa.NativeFile:
        """A random-access reader of ``url`` (ranged requests: for a footer, not for a whole read)."""
        return self.fs.open_input_file(self.key(url))

    def write_atomic(self, url: str, write: Callable[[pa.NativeFile], None]) -> None:
        """``write(stream)`` into a temporary key beside ``url``, then publish it at ``url`` in one move."""
        key = self.key(url)
        folder, _, name = key.rpartition("/")
        tmp = f"{folder}/.{name}.{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.tmp"
        if self.scheme == "file":
            self.fs.create_dir(folder, recursive=True)
        try:
            with self.fs.open_output_stream(tmp) as stream:
                write(stream)
            self.fs.move(tmp, key)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except (OSError, pa.ArrowException):
                pass  # never written, or already moved
            raise

    def move(self, source: str, destination: str) -> None:
        self.fs.move(self.key(source), self.key(destination))

    def list(self, url: str) -> list[str]:
        """URLs of the files under ``url``, recursively (hidden temporary keys included: callers filter)."""
        selector = pafs.FileSelector(self.key(url), recursive=True, allow_not_found=True)
        prefix = f"{self.scheme}://"
        return sorted(prefix + info.path.lstrip("/") if self.scheme != "file" else f"file://{info.path}"
                      for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.File)

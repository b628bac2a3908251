"""Model uploads: a streaming ``multipart/form-data`` reader and the cheap ONNX check.

The file part is streamed straight into the blob store's temp file with the size cap enforced
while reading (Starlette's form parser would spool the whole body first, uncapped). Anything
that goes wrong removes the temp file: no partial blob is ever left.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from bnnbench.schemas import ModelOut
from bnnbench.settings import CoordinatorSettings
from converters.errors import ConversionError
from converters.frontend.archive import (
    MAX_ARCHIVE_MEMBERS,
    archive_kind,
    check_model_archive,
    external_data_locations,
)
from coordinator.db import Database
from coordinator.errors import PayloadTooLarge, Unprocessable
from coordinator.models import Model
from coordinator.store import BlobStore, BlobWriter, TooLarge
from coordinator.views import model_out

TEXT_FIELDS = ("name", "arch", "algorithm")
MAX_FIELD_BYTES = 1024
MULTIPART_SLACK = 64 * 1024  # boundaries, part headers and the small text fields


@dataclass
class Upload:
    sha256: str
    size: int
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)


class _FormReader:
    """Callbacks for python-multipart's push parser."""

    def __init__(self, store: BlobStore, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.writer: BlobWriter | None = None
        self.filename: str | None = None
        self._headers: dict[bytes, bytes] = {}
        self._hname = b""
        self._hvalue = b""
        self._part: str | None = None  # "file" | text field name | "" (ignored)
        self._text = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._hname = self._hvalue = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._hname.strip().lower()] = self._hvalue.strip()
        self._hname = self._hvalue = b""

    def _headers_finished(self) -> None:
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode(errors="replace")
        filename = opts.get(b"filename")
        if filename is not None:
            if name != "file":
                raise Unprocessable(f"unexpected file part {name!r}: send the model as 'file'")
            if self.writer is not None:
                raise Unprocessable("more than one 'file' part: upload one model per request")
            self.filename = Path(filename.decode(errors="replace")).name or None
            self.writer = self.store.writer(self.max_bytes)
            self._part = "file"
        elif name in TEXT_FIELDS:
            self._part = name
            self._text = bytearray()
        else:
            self._part = ""  # unknown text fields are ignored

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            assert self.writer is not None
            self.writer.write(data[start:end])
        elif self._part:
            self._text += data[start:end]
            if len(self._text) > MAX_FIELD_BYTES:
                raise Unprocessable(
                    f"form field {self._part!r} is longer than {MAX_FIELD_BYTES} bytes"
                )

    def _part_end(self) -> None:
        if self._part and self._part != "file":
            value = self._text.decode(errors="replace").strip()
            if value:
                self.fields[self._part] = value
        self._part = None


async def receive_upload(
    request: Request, store: BlobStore, settings: CoordinatorSettings
) -> Upload:
    """Read a multipart upload into the blob store; raises 413/422 errors, leaving nothing."""
    limit = settings.max_upload_bytes
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    boundary = opts.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise Unprocessable("expected multipart/form-data with the model in a 'file' part")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise PayloadTooLarge(
            f"upload of {int(declared)} bytes exceeds the size limit of {limit} bytes "
            "(max_upload_bytes)"
        )
    reader = _FormReader(store, limit)
    parser = MultipartParser(boundary, reader.callbacks())  # type: ignore[arg-type]
    try:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        except TooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        except FormParserError as exc:
            raise Unprocessable(f"malformed multipart/form-data body: {exc}") from None
        writer = reader.writer
        if writer is None:
            raise Unprocessable("missing the 'file' part holding the ONNX model")
        if writer.size == 0:
            raise Unprocessable("the uploaded file is empty")
        writer.flush()  # the checks read the file by name, not through our buffer
        if archive_kind(writer.tmp_path) is not None:
            # a model with external data arrives as a zip/tar of the .onnx and its data files
            await run_in_threadpool(check_archive, writer.tmp_path, limit)
        elif writer.size <= settings.sync_check_max_bytes:
            await run_in_threadpool(check_onnx_file, writer.tmp_path)
        else:
            check_onnx_header(writer.head(16))
        sha, size = writer.commit()
    finally:
        if reader.writer is not None:
            reader.writer.abort()  # no-op after commit
    return Upload(sha, size, reader.filename, reader.fields)


# ------------------------------------------------------------------ cheap ONNX checks

# (field number, wire type) of onnx.ModelProto's fields: a serialized model starts with one
_MODEL_PROTO_TAGS = {
    (1, 0),
    (2, 2),
    (3, 2),
    (4, 2),
    (5, 0),
    (6, 2),
    (7, 2),
    (8, 2),
    (14, 2),
    (20, 2),
    (25, 2),
}


def check_onnx_header(head: bytes) -> None:
    tag = 0
    for i, b in enumerate(head[:5]):
        tag |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            break
    if (tag >> 3, tag & 7) not in _MODEL_PROTO_TAGS:
        raise Unprocessable("not an ONNX model: the file does not start like a ModelProto")


def check_onnx_file(path: Path) -> None:
    """Parse the protobuf (no checker, no shape inference: that is the analysis' job)."""
    check_onnx_header(path.read_bytes()[:16])
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:
        raise Unprocessable(f"not a valid ONNX model: cannot parse the protobuf ({exc})") from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise Unprocessable("not a valid ONNX model: it has no graph nodes")
    # stored uploads sit side by side: a location would resolve to some other stored blob
    if external := external_data_locations(path):
        raise Unprocessable(
            f"the model keeps its weights in external data files ({', '.join(external[:3])}): "
            "upload a .zip or .tar holding the .onnx and its data files instead"
        )


def check_archive(path: Path, max_bytes: int) -> None:
    try:
        if archive_kind(path) == "tar":
            check_tar_metadata(path, max_bytes)
        check_model_archive(path, max_bytes)
    except ConversionError as exc:
        raise Unprocessable(f"not a usable model archive: {exc}") from None


# one pax extended header or GNU long-name block: paths and a few attributes, never megabytes.
# Python's tarfile reads each one whole into memory and parses it before any limit applies,
# so a 300 KB .tar.gz holding a 300 MB header took 20 s and 600 MB in the upload check
MAX_TAR_METADATA_BYTES = 1 << 20
# decompressed bytes the walk may pass over beyond max_bytes of members: their headers
_TAR_HEADER_SLACK = 64 << 20


class _TarLimit(Exception):
    """What :class:`_BoundedStream` refused (a refusal message)."""


class _BoundedStream:
    """The decompressed bytes of a tar for :mod:`tarfile`: a read above
    MAX_TAR_METADATA_BYTES at once (tarfile reads members' data while listing never, and
    metadata blocks whole) or a position past ``cap`` is refused before it happens."""

    def __init__(self, raw: io.BufferedIOBase, cap: int) -> None:
        self.raw, self.cap = raw, cap

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > MAX_TAR_METADATA_BYTES:
            size = "unbounded" if n is None or n < 0 else f"{n} bytes"
            raise _TarLimit(
                f"a tar metadata block (pax extended header or GNU long name) of {size} "
                f"exceeds the limit of {MAX_TAR_METADATA_BYTES} bytes: refused"
            )
        self._check(self.raw.tell() + n)
        return self.raw.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self.raw.tell() + offset if whence == 1 else None
        if target is None:  # from the end: a compressed stream would decompress it all
            raise _TarLimit("seeking from the end of a compressed tar: refused")
        self._check(target)
        return self.raw.seek(target)

    def tell(self) -> int:
        return self.raw.tell()

    def _check(self, position: int) -> None:
        if position > self.cap:
            raise _TarLimit(
                f"unpacks to more than the limit of {self.cap} bytes (members and headers): refused"
            )


def _decompressed(path: Path) -> io.BufferedIOBase:
    import bz2
    import gzip
    import lzma

    with open(path, "rb") as f:
        head = f.read(6)
    if head[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if head[:3] == b"BZh":
        return bz2.open(path, "rb")
    if head == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")


def check_tar_metadata(path: Path, max_bytes: int) -> None:
    """Walk a tar's headers with every metadata block and the bytes passed over bounded
    (:class:`_BoundedStream`), before :func:`check_model_archive` reads it with tarfile
    unbounded; raises Unprocessable naming the limit. Anything else wrong with the archive
    is left to that check, which names it."""
    import tarfile

    try:
        with _decompressed(path) as raw:
            stream = _BoundedStream(raw, max_bytes + _TAR_HEADER_SLACK)
            with tarfile.open(fileobj=stream, mode="r:") as tf:  # type: ignore[call-overload]
                n = 0
                while tf.next() is not None and n <= MAX_ARCHIVE_MEMBERS:
                    n += 1  # beyond the member limit the real check has its answer
    except _TarLimit as exc:
        raise Unprocessable(f"not a usable model archive: {path.name}: {exc}") from None
    except (tarfile.TarError, OSError, EOFError, ValueError, RuntimeError):
        return  # malformed: check_model_archive says how


# ------------------------------------------------------------------ rows


def store_model(db: Database, up: Upload) -> tuple[ModelOut, bool]:
    """The model for the uploaded bytes; (model, created). Same bytes → the existing row."""
    try:
        with db.session() as s:
            existing = s.scalar(select(Model).where(Model.sha256 == up.sha256))
            if existing is not None:
                _fill_labels(existing, up)
                s.flush()
                return model_out(existing), False
            name = up.fields.get("name") or up.filename or up.sha256[:12]
            model = Model(
                name=name[:255],
                sha256=up.sha256,
                size=up.size,
                arch=up.fields.get("arch"),
                algorithm=(up.fields.get("algorithm") or "").lower() or None,
                analysis_status="pending",
            )
            s.add(model)
            s.flush()
            return model_out(model), True
    except IntegrityError:  # a concurrent upload of the same bytes won the race
        with db.session() as s:
            existing = s.scalar(select(Model).where(Model.sha256 == up.sha256))
            if existing is None:
                raise
            return model_out(existing), False


def _fill_labels(model: Model, up: Upload) -> None:
    # labels given now fill gaps only; stored labels are never overwritten by a re-upload
    if not model.arch and up.fields.get("arch"):
        model.arch = up.fields["arch"]
    if not model.algorithm and up.fields.get("algorithm"):
        model.algorithm = up.fields["algorithm"].lower()

"""Uploads that are archives: a ``.zip``/``.tar[.gz|.bz2|.xz]`` holding one ``.onnx`` and its
external data, unpacked safely; and the external data a plain ``.onnx`` refers to.

Every refusal is a :class:`MalformedModelError` naming the archive and the member."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import IO

from converters.errors import MalformedModelError, first_line

#: what one archive may unpack to, all members together (ResNet-34 with its external data is
#: about 90 MB); checked against the bytes really written, not only the declared sizes
MAX_ARCHIVE_BYTES = 4 << 30
MAX_ARCHIVE_MEMBERS = 1000


def archive_kind(path: str | Path) -> str | None:
    """``"zip"`` or ``"tar"`` (plain, gzip, bzip2 or xz) if the file is an archive, else None.

    Decided by content, not by name: the coordinator stores uploads under their hash."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if (
        head[:2] == b"\x1f\x8b"
        or head[:3] == b"BZh"
        or head[:6] == b"\xfd7zXZ\x00"
        or head[257:262] == b"ustar"
    ):
        return "tar"
    return None


def _member_path(name: str, archive: str) -> PurePosixPath:
    """A member name as a relative path that stays inside the extraction directory."""
    p = PurePosixPath(name)
    bad = (
        not name
        or "\\" in name
        or "\x00" in name
        or p.is_absolute()
        or ".." in p.parts
        or ":" in (p.parts[0] if p.parts else "")
    )
    if bad or not p.parts:
        raise MalformedModelError(
            f"{archive}: unsafe member path {name!r} (absolute, '..', drive or backslash): refused"
        )
    return p


def _ignored_member(p: PurePosixPath) -> bool:
    # macOS Finder adds resource-fork copies (__MACOSX/, ._name) to every zip it makes
    return p.parts[0] == "__MACOSX" or p.name.startswith("._")


class _Budget:
    """Bytes an archive may still unpack to."""

    def __init__(self, limit: int, archive: str) -> None:
        self.limit = self.left = limit
        self.archive = archive

    def copy(self, src: IO[bytes], dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "xb") as out:  # "x": two members with one name must not overwrite
            while chunk := src.read(1 << 20):
                self.left -= len(chunk)
                if self.left < 0:
                    raise MalformedModelError(
                        f"{self.archive}: unpacks to more than the limit "
                        f"of {self.limit} bytes: refused"
                    )
                out.write(chunk)


def _extract_zip(path: Path, dest: Path | None, max_bytes: int) -> list[PurePosixPath]:
    import zipfile

    files = []
    budget = _Budget(max_bytes, path.name)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_ARCHIVE_MEMBERS:
            raise MalformedModelError(
                f"{path.name}: {len(infos)} members, more than {MAX_ARCHIVE_MEMBERS}: refused"
            )
        seen: set[PurePosixPath] = set()
        for info in infos:
            p = _member_path(info.filename, path.name)
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:
                raise MalformedModelError(
                    f"{path.name}: member {info.filename!r} is a symbolic link: refused"
                )
            if info.is_dir():
                continue
            if p in seen:
                raise MalformedModelError(f"{path.name}: member {info.filename!r} appears twice")
            seen.add(p)
        if sum(i.file_size for i in infos) > max_bytes:
            raise MalformedModelError(
                f"{path.name}: declares more than the limit of {max_bytes} bytes unpacked: refused"
            )
        for info in infos:
            if info.is_dir():
                continue
            p = _member_path(info.filename, path.name)
            if _ignored_member(p):
                continue
            if dest is not None:
                with zf.open(info) as src:
                    budget.copy(src, dest.joinpath(*p.parts))
            files.append(p)
    return files


def _extract_tar(path: Path, dest: Path | None, max_bytes: int) -> list[PurePosixPath]:
    import tarfile

    files = []
    budget = _Budget(max_bytes, path.name)
    with tarfile.open(path, "r:*") as tf:
        n = 0
        seen: set[PurePosixPath] = set()
        while (m := tf.next()) is not None:  # streaming: one pass, no member list built first
            n += 1
            if n > MAX_ARCHIVE_MEMBERS:
                raise MalformedModelError(
                    f"{path.name}: more than {MAX_ARCHIVE_MEMBERS} members: refused"
                )
            p = _member_path(m.name, path.name)
            if m.isdir():
                continue
            if not m.isfile():
                kind = "a link" if (m.issym() or m.islnk()) else "not a regular file"
                raise MalformedModelError(f"{path.name}: member {m.name!r} is {kind}: refused")
            if p in seen:
                raise MalformedModelError(f"{path.name}: member {m.name!r} appears twice")
            seen.add(p)
            if _ignored_member(p):
                continue
            if dest is None:  # listing only: the sizes the headers declare
                budget.left -= m.size
                if budget.left < 0:
                    raise MalformedModelError(
                        f"{path.name}: declares more than the limit of "
                        f"{max_bytes} bytes unpacked: refused"
                    )
                files.append(p)
                continue
            src = tf.extractfile(m)
            if src is None:
                raise MalformedModelError(f"{path.name}: member {m.name!r} cannot be read")
            with src:
                budget.copy(src, dest.joinpath(*p.parts))
            files.append(p)
    return files


def _scan_archive(p: Path, dest: Path | None, max_bytes: int) -> PurePosixPath:
    import tarfile
    import zipfile

    kind = archive_kind(p)
    try:
        if kind == "zip":
            files = _extract_zip(p, dest, max_bytes)
        elif kind == "tar":
            files = _extract_tar(p, dest, max_bytes)
        else:
            raise MalformedModelError(f"{p.name}: not a zip or tar archive")
    except (
        zipfile.BadZipFile,
        tarfile.TarError,
        EOFError,
        OSError,
        RuntimeError,
        NotImplementedError,
        ValueError,
    ) as exc:
        # RuntimeError: encrypted zip; NotImplementedError: unknown zip compression
        raise MalformedModelError(
            f"{p.name}: unreadable {kind} archive ({type(exc).__name__}: {first_line(exc)})"
        ) from exc
    models = [f for f in files if f.suffix.lower() == ".onnx"]
    if len(models) != 1:
        listed = ", ".join(str(f) for f in models[:5])
        raise MalformedModelError(
            f"{p.name}: an archive must hold exactly one .onnx file (and its external data), "
            f"this one holds {len(models)}" + (f": {listed}" if listed else "")
        )
    return models[0]


def extract_model_archive(
    path: str | Path, dest: str | Path, max_bytes: int = MAX_ARCHIVE_BYTES
) -> Path:
    """Unpack a ``.zip``/``.tar[.gz|.bz2|.xz]`` holding exactly one ``.onnx`` (plus its external
    data files) into the directory ``dest``; returns the ``.onnx`` path.

    Refused with :class:`MalformedModelError`: member paths that are absolute or contain
    ``..``, links and special files, duplicate names, more than ``MAX_ARCHIVE_MEMBERS``
    members, more than ``max_bytes`` unpacked (counted while writing, so a lying header does
    not help), no or several ``.onnx`` files, and anything unreadable."""
    dest = Path(dest)
    return dest.joinpath(*_scan_archive(Path(path), dest, max_bytes).parts)


def check_model_archive(path: str | Path, max_bytes: int = MAX_ARCHIVE_BYTES) -> str:
    """The cheap upload-time check of an archive: the same refusals as
    :func:`extract_model_archive`, from the listing alone (declared sizes; nothing is
    written). Returns the ``.onnx`` member's name."""
    return str(_scan_archive(Path(path), None, max_bytes))


def external_data_locations(path: str | Path) -> list[str]:
    """The external data files a plain ``.onnx`` refers to (without reading them).

    A service storing single uploads side by side should refuse a plain ``.onnx`` for which this
    is non-empty (ask for an archive instead): its locations would be resolved next to other
    stored files."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise MalformedModelError(
            f"{Path(path).name}: not a parsable ONNX model "
            f"({type(exc).__name__}: {first_line(exc)})"
        ) from exc
    return sorted(
        {ExternalDataInfo(t).location for t in _get_all_tensors(model) if uses_external_data(t)}
    )

"""Bounded fuzzing of what the upload takes (issue 14): malformed ONNX protobufs and
archives, uploaded through the API of a real coordinator.

(a) A small valid binarized model (tests/helpers/onnx_builder.py) is mutated with a seeded
``random``: bit flips, truncations, inserted length fields, huge declared lengths, spliced
and zeroed ranges. (b) The same model as an archive with external data (zip, tar.gz), mutated
likewise, and adversarial archives: bombs (a tiny compressed member declaring more than the
upload limit unpacked), 1001 members, path traversal names, links, special files, a nested
archive, duplicate names, a pax header bomb and a zip whose headers lie about a member's size.
The limits are those of coordinator/uploads.py and converters/frontend/archive.py: the sizes
an archive declares unpacked may not pass max_upload_bytes (the worker counts the bytes again
while it writes them, against MAX_ARCHIVE_BYTES), at most MAX_ARCHIVE_MEMBERS members, one
pax or GNU long-name block at most MAX_TAR_METADATA_BYTES; there is no separate
compression-ratio limit: a bomb meets the unpacked-size one.

Every answer is a 2xx or a 4xx with a short JSON detail; every accepted upload's analysis
(in a worker process) ends done or failed with a stored error; the server stays healthy, no
worker process outlives its item, and nothing is written outside the data directory (the
workers' temporary directory, TMPDIR, is inside the test's folder and empty at the end).
"""

from __future__ import annotations

import io
import random
import secrets
import stat
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import TEST_SETTINGS, CoordinatorProcess, wait_for
from helpers.onnx_builder import OnnxBuilder
from helpers.procs import children

from bnnbench.schemas import API_PREFIX
from converters.frontend.archive import MAX_ARCHIVE_MEMBERS
from coordinator.uploads import MAX_TAR_METADATA_BYTES

pytestmark = pytest.mark.slow

ADMIN = "fuzz-inputs-admin-token"
SEED = 14
ONNX_CASES = 24
ARCHIVE_CASES = 12
MAX_UPLOAD = 4 << 20  # max_upload_bytes of the fuzzed coordinator: bombs stay cheap to build
ESCAPE = f"escape-{secrets.token_hex(4)}"  # the name traversal members try to write


class _Coordinator(CoordinatorProcess):
    """A coordinator whose workers' temporary files go to a folder of the test (TMPDIR)."""

    def __init__(self, data_dir: Path, tmp_dir: Path) -> None:
        settings = {
            **TEST_SETTINGS,
            "max_upload_bytes": MAX_UPLOAD,
            "conversion_timeout_seconds": 120,  # a hung worker fails its item, not the run
        }
        super().__init__(data_dir, settings, ADMIN)
        self.tmp_dir = tmp_dir

    def env(self) -> dict[str, str]:
        return {**super().env(), "TMPDIR": str(self.tmp_dir)}


@dataclass
class Fuzz:
    c: _Coordinator
    http: httpx.Client
    root: Path  # the test's folder: data dir, TMPDIR and the files built
    accepted: dict[int, str] = field(default_factory=dict)  # model id -> case


@pytest.fixture(scope="module")
def fz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "tmp").mkdir()
    c = _Coordinator(root / "data", root / "tmp")
    try:
        c.start()
        headers = {"Authorization": f"Bearer {ADMIN}"}
        with httpx.Client(base_url=c.url + API_PREFIX, headers=headers, timeout=120) as http:
            yield Fuzz(c, http, root)
    finally:
        c.stop()


# ------------------------------------------------------------------ the seed model


def _seed_model() -> Any:
    """A binarized conv block (FP32 stem, Sign/Sign conv, BatchNorm, Relu), input 1x3x8x8."""
    rng = np.random.default_rng(SEED)
    b = OnnxBuilder([1, 3, 8, 8])
    y = b.node("Conv", ["input", b.init(rng.normal(0, 0.3, (8, 3, 3, 3)))], pads=[1, 1, 1, 1])
    y = b.batchnorm(y, rng, 8)
    w = b.node("Sign", [b.init(rng.normal(0, 0.3, (8, 8, 3, 3)))])
    y = b.node("Conv", [b.node("Sign", [y]), w], pads=[1, 1, 1, 1])
    y = b.node("Relu", [b.batchnorm(y, rng, 8)])
    return b.model(y, {"bnnbench.algorithm": "bnn"})


def _model_bytes() -> bytes:
    return bytes(_seed_model().SerializeToString())


def _external_data_files(d: Path) -> dict[str, bytes]:
    """The seed model saved with its weights in an external file: {name: bytes}."""
    import onnx

    d.mkdir(parents=True, exist_ok=True)
    onnx.save(
        _seed_model(),
        str(d / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return {name: (d / name).read_bytes() for name in ("model.onnx", "weights.bin")}


# ------------------------------------------------------------------ mutations


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


HUGE = (2**31 - 1, 2**32, 2**40, 2**63 - 1, 2**64 - 1)


def _bit_flips(r: random.Random, b: bytes) -> bytes:
    out = bytearray(b)
    for _ in range(r.randint(1, 8)):
        out[r.randrange(len(out))] ^= 1 << r.randrange(8)
    return bytes(out)


def _truncate(r: random.Random, b: bytes) -> bytes:
    return b[: r.randrange(1, len(b))]


def _insert_length(r: random.Random, b: bytes) -> bytes:
    """A length-delimited field (tag of a random field number, wire type 2) whose length is
    small, past the end or huge, inserted at a random offset."""
    tag = _varint((r.randint(1, 30) << 3) | 2)
    length = r.choice([0, 1, len(b), len(b) * 4, r.choice(HUGE)])
    i = r.randrange(len(b))
    return b[:i] + tag + _varint(length) + b[i:]


def _huge_length(r: random.Random, b: bytes) -> bytes:
    """A varint at a random offset overwritten with a huge one (a length or a count)."""
    i = r.randrange(len(b))
    v = _varint(r.choice(HUGE))
    return b[:i] + v + b[i + len(v) :]


def _splice(r: random.Random, b: bytes) -> bytes:
    i, j = sorted(r.sample(range(len(b)), 2))
    k = r.randrange(len(b))
    return b[:k] + b[i:j] + b[k:]


def _zero_range(r: random.Random, b: bytes) -> bytes:
    i = r.randrange(len(b))
    n = r.randint(1, 64)
    return b[:i] + b"\0" * n + b[i + n :]


MUTATIONS: list[Callable[[random.Random, bytes], bytes]] = [
    _bit_flips,
    _truncate,
    _insert_length,
    _huge_length,
    _splice,
    _zero_range,
]


def _mutants(seed: bytes, n: int, salt: int) -> Iterator[tuple[str, bytes]]:
    r = random.Random(SEED * 1000 + salt)
    for i in range(n):
        mutation = MUTATIONS[i % len(MUTATIONS)]  # each kind equally often
        yield f"{mutation.__name__[1:]}#{i}", mutation(r, seed)


# ------------------------------------------------------------------ archives


def _zip(members: list[tuple[str, bytes]], level: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", level) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def _tar_entry(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _zip_symlink(model: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.onnx", model)
        link = zipfile.ZipInfo("weights.bin")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return buf.getvalue()


def _zip_lying_size(files: dict[str, bytes]) -> bytes:
    """The external-data zip with weights.bin's uncompressed size declared as 16 bytes in its
    local and central headers: the upload check reads the declared sizes, the worker's
    extraction reads the bytes (and their CRC)."""
    data = bytearray(_zip(sorted(files.items())))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("weights.bin")
    data[info.header_offset + 22 : info.header_offset + 26] = (16).to_bytes(4, "little")
    central = data.rindex(b"PK\x01\x02", 0, data.rindex(b"weights.bin"))
    data[central + 24 : central + 28] = (16).to_bytes(4, "little")
    return bytes(data)


def _pax_bomb(payload: int) -> bytes:
    import gzip

    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, payload
    mib = gzip.compress(b"a" * (1 << 20))
    parts = [gzip.compress(header.tobuf(format=tarfile.USTAR_FORMAT))]
    parts += [mib] * (payload >> 20) + [gzip.compress(b"\0" * 1024)]
    return b"".join(parts)


def _adversarial(files: dict[str, bytes]) -> list[tuple[str, bytes, int, tuple[str, ...]]]:
    """(case, upload, status, words of the detail) for archives built to break a limit."""
    model = files["model.onnx"]
    zeros = b"\0" * (2 * MAX_UPLOAD)  # deflates about 1000:1
    over = f"limit of {MAX_UPLOAD} bytes"
    unsafe = ("unsafe member path",)
    many = [(f"w{i}.bin", b"") for i in range(MAX_ARCHIVE_MEMBERS + 1)]
    inner = _zip(sorted(files.items()))
    return [
        ("zip bomb", _zip([("model.onnx", model), ("weights.bin", zeros)]), 422, (over,)),
        ("tar.gz bomb", _tar([("model.onnx", model), ("weights.bin", zeros)]), 422, (over,)),
        ("tar.xz bomb", _tar([("model.onnx", model), ("w.bin", zeros)], "w:xz"), 422, (over,)),
        ("zip members", _zip([("model.onnx", model), *many]), 422, (f"{MAX_ARCHIVE_MEMBERS}",)),
        ("tar members", _tar([("model.onnx", model), *many]), 422, (f"{MAX_ARCHIVE_MEMBERS}",)),
        ("zip ..", _zip([(f"../{ESCAPE}.onnx", model)]), 422, unsafe),
        ("zip a/../..", _zip([(f"a/../../{ESCAPE}.onnx", model)]), 422, unsafe),
        ("zip absolute", _zip([(f"/tmp/{ESCAPE}.onnx", model)]), 422, unsafe),
        ("zip backslash", _zip([(f"..\\{ESCAPE}.onnx", model)]), 422, unsafe),
        ("zip drive", _zip([(f"C:{ESCAPE}.onnx", model)]), 422, unsafe),
        ("tar ..", _tar([(f"../../{ESCAPE}.onnx", model)]), 422, unsafe),
        ("tar absolute", _tar([(f"/tmp/{ESCAPE}.onnx", model)]), 422, unsafe),
        ("zip symlink", _zip_symlink(model), 422, ("symbolic link",)),
        (
            "tar symlink",
            _tar([("model.onnx", model), _tar_entry("weights.bin", tarfile.SYMTYPE, "/etc")]),
            422,
            ("is a link",),
        ),
        (
            "tar hard link",
            _tar([("model.onnx", model), _tar_entry("w.bin", tarfile.LNKTYPE, "/etc/passwd")]),
            422,
            ("is a link",),
        ),
        (
            "tar fifo",
            _tar([("model.onnx", model), _tar_entry("weights.bin", tarfile.FIFOTYPE)]),
            422,
            ("not a regular file",),
        ),
        ("nested zip", _zip([("inner.zip", inner)]), 422, ("exactly one .onnx", "holds 0")),
        ("nested tar", _tar([("inner.tar.gz", _tar(sorted(files.items())))]), 422, ("holds 0",)),
        ("two models", _zip([("a.onnx", model), ("b.onnx", model)]), 422, ("holds 2",)),
        ("duplicates", _tar([("model.onnx", model), ("model.onnx", model)]), 422, ("twice",)),
        (
            "pax bomb",
            _pax_bomb(64 << 20),
            422,
            ("pax extended header", f"limit of {MAX_TAR_METADATA_BYTES} bytes"),
        ),
        ("too big", random.Random(SEED).randbytes(MAX_UPLOAD + 1), 413, ("max_upload_bytes",)),
    ]


# ------------------------------------------------------------------ checks


def _upload(fz: Fuzz, case: str, data: bytes, name: str = "model.onnx") -> httpx.Response:
    r = fz.http.post("/models", files={"file": (name, data)})
    assert r.status_code in (200, 201, 413, 422), (case, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), (case, r.text[:300])
    if r.status_code >= 400:
        detail = r.json()["detail"]
        assert isinstance(detail, str) and 0 < len(detail) < 2000, (case, detail[:300])
    elif r.status_code == 201:
        fz.accepted[r.json()["id"]] = case
    return r


def _healthy(fz: Fuzz) -> None:
    assert fz.c.running, fz.c.log_tail()
    assert httpx.get(f"{fz.c.url}/health", timeout=30).json()["status"] == "ok"


def _finished_analyses(fz: Fuzz, ids: list[int]) -> list[dict[str, Any]]:
    """The models once every analysis of ``ids`` has ended (a deadline, not a timing)."""

    def done() -> list[dict[str, Any]] | None:
        models = [fz.http.get(f"/models/{i}").json() for i in ids]
        ended = all(m["analysis_status"] in ("done", "failed") for m in models)
        return models if ended else None

    return wait_for(done, timeout=600, what="the fuzzed models' analyses", context=fz.c.log_tail)


def _no_worker_left(fz: Fuzz) -> None:
    assert fz.c.proc is not None
    pid = fz.c.proc.pid
    wait_for(lambda: not children(pid, "coordinator.worker"), timeout=60, what="workers to end")


def _nothing_outside(fz: Fuzz) -> None:
    """Workers' temporary folders are gone, the store's tmp/ is empty, and no member escaped
    (the traversal names resolve within the test's folder or /tmp)."""
    assert sorted(p.name for p in (fz.root / "tmp").iterdir()) == []
    assert fz.c.tmp_files() == []
    escaped = [*fz.root.parent.rglob(f"{ESCAPE}*"), *Path("/tmp").glob(f"{ESCAPE}*")]
    assert escaped == []


# ------------------------------------------------------------------ tests


def test_mutated_onnx_models_answer_4xx_or_are_analysed(fz: Fuzz) -> None:
    started = time.monotonic()
    seed = _model_bytes()
    # the unmutated model is accepted and analysed: the cases below start from a real one
    r = _upload(fz, "seed", seed)
    assert r.status_code == 201, r.text
    statuses: dict[int, int] = {}
    for i, (case, data) in enumerate(_mutants(seed, ONNX_CASES, salt=1)):
        status = _upload(fz, case, data).status_code
        statuses[status] = statuses.get(status, 0) + 1
        if i % 10 == 9:
            _healthy(fz)
    ids = [i for i, case in fz.accepted.items() if case == "seed" or "#" in case]
    models = _finished_analyses(fz, ids)
    by_id = {m["id"]: m for m in models}
    assert by_id[min(ids)]["analysis_status"] == "done", by_id[min(ids)]["analysis_error"]
    for m in models:
        if m["analysis_status"] == "failed":
            assert m["analysis_error"], (fz.accepted[m["id"]], m)
            print("analysis failed:", fz.accepted[m["id"]], m["analysis_error"][:300])
    # both outcomes were reached: some mutants are refused at the upload, some analysed
    assert statuses.get(422, 0) > 0 and len(ids) > 1, statuses
    _healthy(fz)
    _no_worker_left(fz)
    _nothing_outside(fz)
    print(f"onnx: {statuses}, {len(ids)} analysed, {time.monotonic() - started:.1f} s")


def test_adversarial_archives_are_refused_naming_the_limit(fz: Fuzz) -> None:
    files = _external_data_files(fz.root / "external")
    for case, data, status, words in _adversarial(files):
        r = _upload(fz, case, data, name="model.zip")
        assert r.status_code == status, (case, r.status_code, r.text[:300])
        for word in words:
            assert word in r.json()["detail"], (case, word, r.json()["detail"])
    # the valid archives are accepted and analysed: the refusals above are the limits'
    good = {
        "zip": _zip(sorted(files.items())),
        "tar.gz": _tar(sorted(files.items())),
        "tar.bz2": _tar(sorted(files.items()), "w:bz2"),
    }
    ids = [_upload(fz, kind, data, name=f"m.{kind}").json()["id"] for kind, data in good.items()]
    # a zip whose headers understate a member passes the upload check (declared sizes) and
    # fails in the worker, which reads the bytes and their CRC
    (liar,) = [_upload(fz, "lying zip", _zip_lying_size(files)).json()["id"]]
    models = {m["id"]: m for m in _finished_analyses(fz, [*ids, liar])}
    for i in ids:
        assert models[i]["analysis_status"] == "done", models[i]["analysis_error"]
    assert models[liar]["analysis_status"] == "failed"
    assert "weights.bin" in models[liar]["analysis_error"], models[liar]["analysis_error"]
    _healthy(fz)
    _no_worker_left(fz)
    _nothing_outside(fz)


def test_mutated_archives_answer_4xx_or_are_analysed(fz: Fuzz) -> None:
    started = time.monotonic()
    files = _external_data_files(fz.root / "external")
    seeds = [("zip", _zip(sorted(files.items()))), ("tar.gz", _tar(sorted(files.items())))]
    first = len(fz.accepted)
    statuses: dict[int, int] = {}
    for salt, (kind, seed) in enumerate(seeds, start=2):
        for case, data in _mutants(seed, ARCHIVE_CASES // len(seeds), salt):
            status = _upload(fz, f"{kind} {case}", data, name=f"m.{kind}").status_code
            statuses[status] = statuses.get(status, 0) + 1
    _healthy(fz)
    ids = list(fz.accepted)[first:]
    for m in _finished_analyses(fz, ids):
        if m["analysis_status"] == "failed":
            assert m["analysis_error"], (fz.accepted[m["id"]], m)
            print("analysis failed:", fz.accepted[m["id"]], m["analysis_error"][:300])
    assert statuses.get(422, 0) > 0, statuses
    _healthy(fz)
    _no_worker_left(fz)
    _nothing_outside(fz)
    assert "unhandled error" not in fz.c.log_tail(100_000)
    print(f"archives: {statuses}, {len(ids)} analysed, {time.monotonic() - started:.1f} s")

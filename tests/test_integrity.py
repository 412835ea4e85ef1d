"""Model-file integrity: crafted GGUF headers, corrupt manifests, corrupt weights, stale work folders.

Each test reproduces a probe from the hardening issue: before the fix these gave
tracebacks, loaded silently corrupt weights, or called a broken model "unknown".
The two fuzz tests run a bounded number of hypothesis examples.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import struct
import time

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import manifest as mf
from edge.cli import cli
from edge.errors import BadModelFile, ManifestMismatch
from edge.gguf_header import read_info
from edge.store import Store

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# -- a tiny GGUF written byte by byte, so a test can put anything in it -----------------
def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _str(key) + struct.pack("<I", vtype) + payload


def gguf_bytes(alignment=None, ttype: int = 0, extra_kv: bytes = b"", n_kv_extra: int = 0) -> bytes:
    """A GGUF v3 file with one 32-value tensor of ggml type `ttype` (0: f32)."""
    kvs = [_kv("general.architecture", 8, _str("llama")), _kv("llama.context_length", 4, struct.pack("<I", 64)),
           _kv("general.file_type", 4, struct.pack("<I", 0))]
    if alignment is not None:
        kind, value = alignment
        kvs.append(_kv("general.alignment", kind, value))
    body = b"".join(kvs) + extra_kv
    tensors = _str("w") + struct.pack("<I", 1) + struct.pack("<Q", 32) + struct.pack("<I", ttype) + struct.pack("<Q", 0)
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kvs) + n_kv_extra) + body + tensors
    head += b"\0" * (-len(head) % 32)
    return head + b"\0" * 128


def test_handmade_gguf_reads(tmp_path):
    p = tmp_path / "ok.gguf"
    p.write_bytes(gguf_bytes())
    info = read_info(p)
    assert (info.architecture, info.context_length, info.quant) == ("llama", 64, "f32")
    assert info.data_end == p.stat().st_size - 128 + 32 * 4


@pytest.mark.parametrize("alignment, what", [
    ((4, struct.pack("<I", 0)), "general.alignment 0 is not a positive power of two"),
    ((4, struct.pack("<I", 24)), "general.alignment 24 is not a positive power of two"),
    ((8, _str("32")), "general.alignment is str '32', not an integer"),
    ((8, _str("big")), "general.alignment is str 'big', not an integer"),
    ((6, struct.pack("<f", 32.0)), "general.alignment is float '32.0', not an integer"),
])
def test_bad_alignment_is_a_bad_model_file(tmp_path, alignment, what):
    p = tmp_path / "align.gguf"
    p.write_bytes(gguf_bytes(alignment))
    with pytest.raises(BadModelFile) as e:
        read_info(p)
    assert str(e.value) == f"{p} has a corrupt GGUF header ({what}). Download or convert the file again."


def test_crafted_alignment_on_run_and_import_is_one_line(tmp_path):
    p = tmp_path / "zero.gguf"
    p.write_bytes(gguf_bytes((4, struct.pack("<I", 0))))
    msg = f"Error: {p} has a corrupt GGUF header (general.alignment 0 is not a positive power of two). " \
          "Download or convert the file again.\n"
    for args in (["run", "-m", str(p), "hi"], ["import", str(p), "--name", "crafted"]):
        r = CliRunner().invoke(cli, args)
        assert (r.exit_code, r.output) == (1, msg), args
        assert not isinstance(r.exception, (ZeroDivisionError, ValueError))


def test_unknown_tensor_type_is_an_error_not_skipped(tmp_path):
    p = tmp_path / "newtype.gguf"
    p.write_bytes(gguf_bytes(ttype=4000))
    with pytest.raises(BadModelFile, match=r"holds a tensor of unknown ggml type 4000\. Is it a GGUF file from a newer"):
        read_info(p)


def test_unknown_value_type_and_huge_counts(tmp_path):
    p = tmp_path / "vtype.gguf"
    p.write_bytes(gguf_bytes(extra_kv=_kv("x.y", 99, b""), n_kv_extra=1))
    with pytest.raises(BadModelFile, match="unknown GGUF value type 99"):
        read_info(p)
    q = tmp_path / "count.gguf"
    q.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 1 << 60) + b"\0" * 64)
    with pytest.raises(BadModelFile, match="corrupt GGUF header"):
        read_info(q)


@pytest.fixture(scope="module")
def real_head():
    """The first 64 KiB of the packaged SmolLM2 GGUF: a real header to mutate."""
    path = Store().resolve(None).artifacts[0].main_path
    with open(path, "rb") as f:
        return f.read(1 << 16)


@FUZZ
@given(data=st.data())
def test_fuzz_gguf_header(tmp_path_factory, real_head, data):
    seed_bytes = data.draw(st.sampled_from([gguf_bytes(), real_head]))
    buf = bytearray(seed_bytes)
    for _ in range(data.draw(st.integers(1, 12))):
        i = data.draw(st.integers(0, len(buf) - 1))
        kind = data.draw(st.sampled_from(["byte", "word", "cut"]))
        if kind == "byte":
            buf[i] = data.draw(st.integers(0, 255))
        elif kind == "word":
            buf[i:i + 8] = data.draw(st.binary(min_size=8, max_size=8))
        else:
            del buf[i:]
            if not buf:
                buf = bytearray(b"GGUF")
    p = tmp_path_factory.mktemp("fuzz") / "f.gguf"
    p.write_bytes(bytes(buf))
    try:
        info = read_info(p)
    except BadModelFile as exc:
        assert "\n" not in str(exc)
        return
    assert info.data_end <= p.stat().st_size
    assert isinstance(info.quant, str) and isinstance(info.architecture, str)


# -- manifests --------------------------------------------------------------------------
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=12)
_keys = st.sampled_from([mf.K_FORMAT, mf.K_FILES, mf.K_NAME, mf.K_QUANT, mf.K_MAIN, mf.K_CONTEXT, mf.K_QUALITY,
                         mf.K_PARAMS, "path", "size", "sha256"])
_manifest = st.dictionaries(_keys, _json | st.lists(st.dictionaries(_keys, _json, max_size=4), max_size=3), max_size=7)


@FUZZ
@given(doc=st.one_of(_manifest, _json), raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_fuzz_manifest_reader(tmp_path_factory, doc, raw):
    folder = tmp_path_factory.mktemp("man")
    (folder / mf.FILENAME).write_bytes(raw if raw is not None else json.dumps(doc).encode())
    try:
        man = mf.read(folder)
    except BadModelFile as exc:
        assert str(exc).startswith(f"The manifest {folder / mf.FILENAME} is corrupt (") or "No manifest" in str(exc)
        return
    # What the reader accepts, the store and the verifier can use without a TypeError.
    from edge.store import artifact_from_folder

    art = artifact_from_folder(folder)
    assert isinstance(art.size, int) and isinstance(art.label, str)
    try:
        mf.verify(folder, man)
    except ManifestMismatch:
        pass


def _store_copy(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("EDGE_HOME", str(home))
    return Store(home)


def test_corrupt_manifest_names_the_file(tmp_path, monkeypatch):
    store = _store_copy(tmp_path, monkeypatch)
    gguf = Store().resolve(None).artifacts[0].main_path
    art = store.import_path(gguf, name="mine")
    path = art.folder / mf.FILENAME
    path.write_text('{"format": "gguf", "files": [')
    r = CliRunner().invoke(cli, ["run", "-m", "mine", "hi"])
    assert r.exit_code == 1
    assert r.output.startswith(f"Error: The manifest {path} is corrupt (not valid JSON: ")
    assert r.output.endswith("Delete the folder and convert or import the model again.\n")
    path.write_text('{"format": "gguf", "files": "all of them"}')
    r = CliRunner().invoke(cli, ["run", "-m", "mine:q4_1", "hi"])
    assert r.output == (f"Error: The manifest {path} is corrupt ('files' is not a list). "
                        "Delete the folder and convert or import the model again.\n")


# -- corrupt weights ----------------------------------------------------------------------
def flip(path, n: int = 2000, skip: int = 4 << 20, seed: int = 0) -> None:
    """Flip `n` bytes past the first `skip` bytes, in place (same size, same inode)."""
    rnd = random.Random(seed)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        for _ in range(n):
            pos = rnd.randrange(min(skip, size // 2), size)
            f.seek(pos)
            b = f.read(1)
            f.seek(pos)
            f.write(bytes([b[0] ^ 0xFF]))


def test_corrupt_imported_gguf_fails_before_output(tmp_path, monkeypatch):
    store = _store_copy(tmp_path, monkeypatch)
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(Store().resolve(None).artifacts[0].main_path, copy)
    store.import_path(copy, name="flipped")
    time.sleep(0.01)  # a later mtime for the flipped file, whatever the clock's grain
    flip(copy)
    r = CliRunner().invoke(cli, ["run", "-m", "flipped", "--no-guard", "-n", "4", "hi"])
    assert r.exit_code == 1
    assert r.output == (f"Error: {copy} is corrupt: its content does not match the sha256 in the manifest. "
                        "Re-convert or re-import the model (or delete the folder from the store).\n")


def test_whole_file_hashed_once_then_only_when_changed(tmp_path, monkeypatch):
    store = _store_copy(tmp_path, monkeypatch)
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(Store().resolve(None).artifacts[0].main_path, copy)
    art = store.import_path(copy, name="warm")
    calls = []
    real = mf.sha256_file
    monkeypatch.setattr(mf, "sha256_file", lambda p, limit=None, **kw: calls.append((p, limit)) or real(p, limit, **kw))
    art.verify()
    assert calls == []  # import hashed it and remembered (size, mtime, inode)
    os.utime(copy, ns=(time.time_ns(), time.time_ns() + 10**9))  # changed, as far as stat can tell
    art.verify()
    assert calls == [(copy, None)]
    art.verify()
    assert calls == [(copy, None)]
    art.verify(full=True)
    assert len(calls) == 2
    stamps = json.loads((art.folder / mf.SIDECAR).read_text())["files"]
    assert set(stamps[str(copy)]) == {"sha256", "size", "mtime_ns", "inode"}


def test_corrupt_onnx_weights_fail_before_output(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from tiny_models import tiny

    art = tiny("llama", {"onnx": "fp32"})[("onnx", "fp32")]
    folder = tmp_path / "onnx-fp32"
    shutil.copytree(art.folder, folder)
    (folder / mf.SIDECAR).unlink(missing_ok=True)
    weights = max((p for p in folder.iterdir() if p.name.startswith("model.onnx")), key=lambda p: p.stat().st_size)
    flip(weights, skip=weights.stat().st_size // 3)
    r = CliRunner().invoke(cli, ["run", "-m", str(folder), "--no-guard", "--backend", "onnx", "-c", "256", "-n", "4", "hi"])
    assert r.exit_code == 1
    assert r.output == (f"Error: {weights} is corrupt: its content does not match the sha256 in the manifest. "
                        "Re-convert or re-import the model (or delete the folder from the store).\n")


# -- work-folder leftovers --------------------------------------------------------------------
def test_tmp_leftovers_older_than_an_hour_are_cleaned_and_reported(tmp_path, monkeypatch):
    from edge.converters.work import clean_stale

    store = _store_copy(tmp_path, monkeypatch)
    tmp = store.tmp_dir()
    old, fresh, mine = tmp / "convert-999999999-x-gguf-q4_0-abc", tmp / "partial-download", tmp / f"convert-{os.getpid()}-y"
    for d in (old, fresh, mine):
        d.mkdir()
        (d / "blob").write_bytes(b"\0" * 1000)
    (tmp / "stray.gguf").write_bytes(b"\0" * 500)
    r = CliRunner().invoke(cli, ["doctor", "--quick", "--json"])
    assert json.loads(r.output)["store"] == {"path": str(store.root), "tmp_entries": 4, "tmp_bytes": 3500}
    hour_ago = time.time() - 3700
    for p in (fresh, fresh / "blob", tmp / "stray.gguf"):
        os.utime(p, (hour_ago, hour_ago))
    removed = clean_stale(store, now=time.time())
    assert sorted(p.name for p in removed) == sorted([old.name, fresh.name, "stray.gguf"])
    assert [p.name for p in tmp.iterdir()] == [mine.name]
    r = CliRunner().invoke(cli, ["doctor", "--quick"], env={"COLUMNS": "300"})
    row = next(line for line in r.output.splitlines() if "Store tmp" in line)
    assert f"1 leftover(s), 0.0 MB in {tmp}; `edge convert` removes those older than an hour" in row


def test_models_lists_a_corrupt_manifest_as_broken(tmp_path, monkeypatch):
    store = _store_copy(tmp_path, monkeypatch)
    art = store.import_path(Store().resolve(None).artifacts[0].main_path, name="mine")
    (art.folder / mf.FILENAME).write_text("[]")
    r = CliRunner().invoke(cli, ["models", "--json"])
    assert json.loads(r.output)["broken"] == [
        f"The manifest {art.folder / mf.FILENAME} is corrupt (a JSON list, not an object). "
        "Delete the folder and convert or import the model again."]

"""Hostile checkpoints are refused and never execute code.

Pickle is used here only to *build* hostile files (and to prove that the payload is live);
the packages under test must contain no pickle loading at all (see the static test below).
"""

import json
import pickle
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dp.dsl.errors import DpError, Span
from dp.interpreter.training.checkpoint import load_checkpoint, save_checkpoint, tensor_digest

ROOT = Path(__file__).resolve().parents[1]
SPAN = Span("prog.dp", 1, 1, 1, 5)
META = {"format": "dp-checkpoint-1", "sha256": "0" * 64}


class Payload:
    """Unpickling this creates (opens for writing) the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def refused(path, *match) -> DpError:
    with pytest.raises(DpError) as info:
        load_checkpoint(path, span=SPAN)
    err = info.value
    assert err.kind == "checkpoint", err.message
    assert err.span == SPAN
    assert "Traceback" not in str(err)
    for m in match:
        assert m in err.message, f"{m!r} not in {err.message!r}"
    return err


# ------------------------------------------------------------------------------ (a) pickles
def test_payload_is_live(tmp_path):
    """Sanity: the payload really would create its marker if unpickled."""
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(Payload(str(proof)))).close()
    assert proof.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_pickle_is_refused(tmp_path, protocol):
    marker = tmp_path / "PWNED"
    p = tmp_path / "model.safetensors"
    p.write_bytes(pickle.dumps({"W": Payload(str(marker))}, protocol=protocol))
    refused(p, str(p), "not a dp checkpoint (safetensors) file")
    assert not marker.exists()


def test_torch_style_zip_with_pickle_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    p = tmp_path / "model.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Payload(str(marker)), protocol=2))
        z.writestr("archive/version", "3\n")
    refused(p, "not a dp checkpoint (safetensors) file", "zip")
    assert not marker.exists()


# ------------------------------------------------------------------------- (b) .npy objects
def test_npy_object_dtype_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    p = tmp_path / "weights.npy"
    with open(p, "wb") as f:
        np.save(f, np.array([Payload(str(marker)), 1], dtype=object), allow_pickle=True)
    refused(p, "not a dp checkpoint (safetensors) file", ".npy")
    assert not marker.exists()


# ------------------------------------------------------------------ (c) hand-built headers
def st(header, data: bytes = b"", n: int | None = None) -> bytes:
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(hb) if n is None else n) + hb + data


def write(tmp_path, raw: bytes, name="c.safetensors"):
    p = tmp_path / name
    p.write_bytes(raw)
    return p


def f32(shape, begin, end):
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


def test_header_length_2_pow_63(tmp_path):
    p = write(tmp_path, st({"__metadata__": META}, n=2 ** 63))
    refused(p, "header length", "100 MB")


def test_header_length_past_file_size(tmp_path):
    p = write(tmp_path, st({"__metadata__": META, "w": f32([2], 0, 8)}, b"\0" * 8, n=5000))
    refused(p, "header length 5000", "larger than the rest of the file")


def test_header_not_starting_with_brace(tmp_path):
    refused(write(tmp_path, st(b'[{"w": 1}]')), "does not start with '{'")
    refused(write(tmp_path, st(b' {"__metadata__": {}}')), "does not start with '{'")
    refused(write(tmp_path, st(b"")), "does not start with '{'")


def test_header_duplicate_keys(tmp_path):
    raw = (b'{"__metadata__": {"format": "dp-checkpoint-1", "sha256": "x"}, '
           b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
           b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}')
    refused(write(tmp_path, st(raw, b"\0" * 8)), "'w' twice")
    raw2 = (b'{"__metadata__": {"format": "a", "format": "dp-checkpoint-1"}, '
            b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}')
    refused(write(tmp_path, st(raw2, b"\0" * 4)), "'format' twice")


def test_overlapping_offsets(tmp_path):
    h = {"__metadata__": META, "a": f32([4], 0, 16), "b": f32([4], 8, 24)}
    refused(write(tmp_path, st(h, b"\0" * 24)), "overlap")


def test_offsets_past_the_buffer(tmp_path):
    h = {"__metadata__": META, "a": f32([16], 0, 64)}
    refused(write(tmp_path, st(h, b"\0" * 16)), "'a'", "past the end", "16 bytes")


def test_gaps(tmp_path):
    h = {"__metadata__": META, "a": f32([2], 0, 8), "b": f32([2], 16, 24)}
    refused(write(tmp_path, st(h, b"\0" * 24)), "gap of 8 bytes")
    h2 = {"__metadata__": META, "a": f32([2], 0, 8)}
    refused(write(tmp_path, st(h2, b"\0" * 12)), "4 bytes after the last tensor")


def test_shape_product_overflow(tmp_path):
    # the safetensors-cpp PoC: the product wraps to 4 elements (16 bytes) in 64-bit arithmetic
    shape = [4194305, 4194305, 211106198978564]
    assert (4194305 * 4194305 * 211106198978564 * 4) % 2 ** 64 == 16
    h = {"__metadata__": META, "w": f32(shape, 0, 16)}
    refused(write(tmp_path, st(h, b"\0" * 16)), "'w'", "overflows 64 bits")


def test_dtype_shape_offset_mismatch(tmp_path):
    h = {"__metadata__": META, "w": f32([2, 2], 0, 8)}
    refused(write(tmp_path, st(h, b"\0" * 8)), "'w'", "F32", "[2, 2]", "16 bytes", "span 8")
    h = {"__metadata__": META, "w": {"dtype": "I64", "shape": [3], "data_offsets": [0, 12]}}
    refused(write(tmp_path, st(h, b"\0" * 12)), "I64", "24 bytes")


@pytest.mark.parametrize("info, match", [
    ({"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}, "unsupported dtype"),
    ({"dtype": 7, "shape": [1], "data_offsets": [0, 1]}, "unsupported dtype"),
    ({"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}, "negative dimension"),
    ({"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}, "list of integers"),
    ({"dtype": "U8", "shape": [1.0], "data_offsets": [0, 1]}, "list of integers"),
    ({"dtype": "U8", "shape": "1", "data_offsets": [0, 1]}, "list of integers"),
    ({"dtype": "U8", "shape": [1] * 65, "data_offsets": [0, 1]}, "65 dimensions"),
    ({"dtype": "U8", "shape": [1], "data_offsets": [1, 0]}, "0 <= begin <= end"),
    ({"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}, "0 <= begin <= end"),
    ({"dtype": "U8", "shape": [1], "data_offsets": [0]}, "two integers"),
    ({"dtype": "U8", "shape": [1]}, "missing data_offsets"),
    ({"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "evil": 1}, "unknown evil"),
    ("not an object", "expected an object"),
])
def test_malformed_tensor_entries(tmp_path, info, match):
    refused(write(tmp_path, st({"__metadata__": META, "t": info}, b"\0")), "'t'", match)


def test_header_json_problems(tmp_path):
    refused(write(tmp_path, st(b'{"a": ')), "not valid JSON")
    refused(write(tmp_path, st(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")))
    refused(write(tmp_path, st(b'{"\xff": 1}')), "not UTF-8")
    refused(write(tmp_path, st({"__metadata__": {"format": 1}})), "strings to strings")
    refused(write(tmp_path, st({"__metadata__": ["format"]})), "strings to strings")


def test_tiny_and_empty_files(tmp_path):
    refused(write(tmp_path, b""), "0 bytes")
    refused(write(tmp_path, b"\x01\x00"), "2 bytes")


def test_random_bytes(tmp_path):
    rs = np.random.RandomState(0)
    for i in range(50):
        raw = rs.bytes(rs.randint(0, 2000))
        refused(write(tmp_path, raw), "not a dp checkpoint")


def test_plain_safetensors_without_dp_metadata(tmp_path):
    import safetensors.numpy

    w = {"w": np.ones(3, np.float32)}
    refused(write(tmp_path, safetensors.numpy.save(w)), "no 'format'")
    refused(write(tmp_path, safetensors.numpy.save(w, metadata={"format": "pt"})),
            "format 'pt'")
    refused(write(tmp_path, safetensors.numpy.save(w, metadata={"format": "dp-checkpoint-1"})),
            "no sha256")


def test_valid_hand_built_file_is_accepted(tmp_path):
    """The helpers above build files that would load when nothing is wrong."""
    w = np.arange(4, dtype=np.float32)
    meta = {"format": "dp-checkpoint-1", "sha256": tensor_digest({"w": w})}
    p = write(tmp_path, st({"__metadata__": meta, "w": f32([4], 0, 16)}, w.tobytes()))
    t, m = load_checkpoint(p)
    np.testing.assert_array_equal(t["w"], w)


# ----------------------------------------------------------------------------- (d) truncation
def valid_file(tmp_path) -> Path:
    rs = np.random.RandomState(0)
    p = tmp_path / "good.safetensors"
    save_checkpoint(p, {"W": rs.randn(16, 32).astype(np.float32),
                        "b": rs.randn(32).astype(np.float32),
                        "n": np.arange(3, dtype=np.int64)}, {"step": "10"})
    return p


def test_truncated_at_300_positions(tmp_path):
    good = valid_file(tmp_path)
    raw = good.read_bytes()
    positions = np.unique(np.linspace(0, len(raw) - 1, 300).astype(int))
    assert len(positions) == 300
    p = tmp_path / "cut.safetensors"
    for cut in positions:
        p.write_bytes(raw[:cut])
        with pytest.raises(DpError) as info:
            load_checkpoint(p)
        assert info.value.kind == "checkpoint"
    load_checkpoint(good)


def test_trailing_bytes_are_refused(tmp_path):
    good = valid_file(tmp_path)
    good.write_bytes(good.read_bytes() + b"\0\0\0\0")
    refused(good, "after the last tensor")


# ------------------------------------------------------------------------------ (e) bit flips
def test_bit_flip_in_data_is_a_checksum_error(tmp_path):
    good = valid_file(tmp_path)
    raw = good.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    start = 8 + n
    rs = np.random.RandomState(0)
    for pos in [start, len(raw) - 1] + list(rs.randint(start, len(raw), 20)):
        for bit in (0, 7):
            b = bytearray(raw)
            b[pos] ^= 1 << bit
            good.write_bytes(bytes(b))
            refused(good, "checkpoint data is corrupt (checksum mismatch)")


def test_bit_flips_anywhere_never_escape(tmp_path):
    good = valid_file(tmp_path)
    raw = good.read_bytes()
    rs = np.random.RandomState(1)
    for _ in range(300):
        b = bytearray(raw)
        b[rs.randint(len(b))] ^= 1 << rs.randint(8)
        good.write_bytes(bytes(b))
        try:
            load_checkpoint(good)
        except DpError as e:
            assert e.kind == "checkpoint"


# --------------------------------------------------------------------------------- static check
FORBIDDEN = re.compile(rb"import pickle|from pickle import|import cPickle|import dill"
                       rb"|pickle\.loads?|torch\.load|allow_pickle\s*=\s*True")


def test_no_unsafe_loaders_in_the_packages():
    hits = []
    scanned = 0
    for pkg in ("dsl", "interpreter"):
        for path in (ROOT / pkg).rglob("*"):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            scanned += 1
            for m in FORBIDDEN.finditer(path.read_bytes()):
                hits.append(f"{path.relative_to(ROOT)}: {m.group().decode()}")
    assert scanned >= 3
    assert not hits, hits


def test_a_checksum_error_names_a_previous_checkpoint_only_when_there_is_one(tmp_path):
    good = valid_file(tmp_path)
    raw = bytearray(good.read_bytes())
    raw[-1] ^= 1
    good.write_bytes(bytes(raw))
    assert refused(good, "checksum mismatch").notes == ()  # no .previous beside it
    previous = Path(str(good) + ".previous")
    previous.write_bytes(b"")
    assert refused(good, "checksum mismatch").notes == (
        f"the previous checkpoint may be intact: {previous}",)

"""Data loading: the bundled digits, .npz and .csv files, mini-batches."""

import io
import os
import zipfile

import numpy as np
import pytest

from dp.dsl.errors import DpError, Span
from dp.interpreter.data import dataset as data
from dp.interpreter.data.csv_file import load_csv
from dp.interpreter.data.dataset import Dataset, batches, load_digits, load_digits_images
from dp.interpreter.data.npz import load_npz

SPAN = Span("prog.dp", 3, 5, 3, 20)


def data_error(fn, *args, match=(), **kw) -> DpError:
    with pytest.raises(DpError) as info:
        fn(*args, **kw)
    err = info.value
    assert err.kind == "data", err.message
    for m in (match if isinstance(match, tuple) else (match,)):
        assert m in err.message, f"{m!r} not in {err.message!r}"
    return err


# ------------------------------------------------------------------------------------ digits
def test_digits_splits():
    tr, te, al = load_digits("train"), load_digits("test"), load_digits("all")
    assert (len(tr), len(te), len(al)) == (1500, 297, 1797)
    for ds in (tr, te, al):
        assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
        assert ds.x.shape[1:] == (64,)
        assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
        assert set(np.unique(ds.y)) <= set(range(10))
    assert tr.x.max() == 1.0
    np.testing.assert_array_equal(np.concatenate([tr.x, te.x]), al.x)
    np.testing.assert_array_equal(np.concatenate([tr.y, te.y]), al.y)
    assert tr.name == "digits:train"


def test_digits_are_fresh_copies():
    a = load_digits("train")
    a.x[0, 0] = 123.0
    assert load_digits("train").x[0, 0] != 123.0


def test_digits_images():
    im, flat = load_digits_images("test"), load_digits("test")
    assert im.x.shape == (297, 1, 8, 8) and im.x.dtype == np.float32
    np.testing.assert_array_equal(im.x.reshape(297, 64), flat.x)
    np.testing.assert_array_equal(im.y, flat.y)


# sha256 of scikit-learn's `load_digits()` (1.9.1) arrays in their own order, as uint8: the pixel
# counts 0..16 (`data`, [1797, 64]) and the labels (`target`). Recorded with
#   python -c "import hashlib, numpy as np; from sklearn.datasets import load_digits as l; d = l();
#   print(hashlib.sha256(d.data.astype(np.uint8).tobytes()).hexdigest(),
#         hashlib.sha256(d.target.astype(np.uint8).tobytes()).hexdigest())"
# so that the check below runs without scikit-learn (which is no dependency of dp).
SKLEARN_DATA_SHA256 = "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3"
SKLEARN_TARGET_SHA256 = "8ba4f891220f5e4c9c819638d1602d74b83618f167043c6da52a2a247841ddf0"


def test_bundled_digits_are_sklearn_s_in_the_documented_order():
    """The bundled split is scikit-learn's digits / 16, permuted by RandomState(0), cut at 1500."""
    import hashlib
    al = load_digits("all")
    perm = np.random.RandomState(0).permutation(len(al))
    data = np.empty((len(al), 64), np.float32)
    target = np.empty(len(al), np.int64)
    data[perm], target[perm] = al.x, al.y                # undo the permutation
    counts = data * 16.0
    np.testing.assert_array_equal(counts, np.round(counts))       # whole counts 0..16
    assert hashlib.sha256(counts.astype(np.uint8).tobytes()).hexdigest() == SKLEARN_DATA_SHA256
    assert hashlib.sha256(target.astype(np.uint8).tobytes()).hexdigest() == SKLEARN_TARGET_SHA256


def test_digits_match_sklearn():
    """The same, against scikit-learn itself where it is installed."""
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    X = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.RandomState(0).permutation(len(X))
    X, y = X[perm], y[perm]
    tr, te = load_digits("train"), load_digits("test")
    np.testing.assert_array_equal(tr.y, y[:1500])
    np.testing.assert_array_equal(te.y, y[1500:])
    np.testing.assert_array_equal(tr.x, X[:1500])
    np.testing.assert_array_equal(te.x, X[1500:])


def test_digits_unknown_split():
    err = data_error(load_digits, "valid", span=SPAN, match=("'valid'", "train", "test"))
    assert err.span == SPAN


# ----------------------------------------------------------------------------------- batches
def test_batches_sizes_and_epochs():
    ds = load_digits("train")
    rng = np.random.RandomState(1)
    e1 = list(batches(ds, 32, rng))
    assert len(e1) == 47
    assert [len(xb) for xb, _ in e1] == [32] * 46 + [28]
    assert all(len(yb) == len(xb) for xb, yb in e1)
    # exactly one permutation per epoch, as torch_ref.train_epochs draws it
    ref = np.random.RandomState(1)
    p1 = ref.permutation(1500)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in e1]), ds.y[p1])
    np.testing.assert_array_equal(e1[0][0], ds.x[p1[:32]])
    e2 = list(batches(ds, 32, rng))
    p2 = ref.permutation(1500)
    assert not np.array_equal(p1, p2)
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in e2]), ds.x[p2])
    assert np.random.RandomState(1).permutation(1500).tolist() == p1.tolist()


def test_batches_draw_at_call_and_are_views():
    ds = load_digits("test")
    rng = np.random.RandomState(5)
    it = batches(ds, 100, rng)                  # drawn now, not at first next()
    state_after = rng.get_state()[1].copy()
    assert not np.array_equal(state_after, np.random.RandomState(5).get_state()[1])
    xb, _ = next(it)
    assert xb.base is not None                  # a view of the permuted copy


def test_batches_no_shuffle_and_no_labels():
    ds = Dataset(np.arange(10, dtype=np.float32).reshape(5, 2), None, "t")
    rng = np.random.RandomState(0)
    before = rng.get_state()[1].copy()
    out = list(batches(ds, 2, rng, shuffle=False))
    assert [b[0].tolist() for b in out] == [[[0, 1], [2, 3]], [[4, 5], [6, 7]], [[8, 9]]]
    assert all(yb is None for _, yb in out)
    np.testing.assert_array_equal(rng.get_state()[1], before)


def test_batches_bad_size():
    with pytest.raises(DpError):
        batches(load_digits("test"), 0, np.random.RandomState(0))


# --------------------------------------------------------------------------------------- npz
def test_npz_round_trip(tmp_path):
    p = tmp_path / "d.npz"
    x = np.random.RandomState(0).rand(7, 3, 2)
    y = np.arange(7, dtype=np.int32)
    np.savez(p, x=x, y=y, extra=np.zeros(2))
    ds = load_npz(p)
    assert ds.x.dtype == np.float32 and ds.x.shape == (7, 3, 2)
    np.testing.assert_allclose(ds.x, x.astype(np.float32))
    assert ds.y.dtype == np.int64 and ds.y.tolist() == list(range(7))
    assert ds.name == "d.npz"


def test_npz_custom_keys_float_targets_no_labels(tmp_path):
    p = tmp_path / "r.npz"
    np.savez_compressed(p, inputs=np.ones((4, 2), np.uint8), targets=np.linspace(0, 1, 4))
    ds = load_npz(str(p), x="inputs", y="targets")
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.float32
    assert load_npz(p, x="inputs", y=None).y is None


def test_npz_missing_file(tmp_path):
    p = tmp_path / "nope.npz"
    err = data_error(load_npz, p, span=SPAN, match=(str(p), "does not exist"))
    assert err.span == SPAN


def test_npz_not_a_zip(tmp_path):
    p = tmp_path / "bad.npz"
    p.write_bytes(b"hello, this is not a zip file at all")
    data_error(load_npz, p, match=(str(p), "not an .npz archive", "zip"))
    q = tmp_path / "arr.npz"
    with open(q, "wb") as f:
        np.save(f, np.zeros(3))
    data_error(load_npz, q, match=("not an .npz archive", ".npy"))
    e = tmp_path / "empty.npz"
    e.write_bytes(b"")
    data_error(load_npz, e, match=("not an .npz archive", "empty"))


def test_npz_corrupt_zip(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x=np.ones((10, 3)), y=np.arange(10))
    raw = good.read_bytes()
    p = tmp_path / "trunc.npz"
    p.write_bytes(raw[: len(raw) // 2])
    data_error(load_npz, p, match=(str(p), "corrupt"))
    # a bit flip inside a member: the CRC check fails
    flipped = bytearray(raw)
    flipped[100] ^= 0x01
    p.write_bytes(bytes(flipped))
    data_error(load_npz, p, match=(str(p), "corrupt"))


def test_npz_truncated_anywhere_is_a_data_error(tmp_path):
    good = tmp_path / "good.npz"
    np.savez_compressed(good, x=np.random.RandomState(0).rand(20, 4), y=np.arange(20))
    raw = good.read_bytes()
    p = tmp_path / "t.npz"
    for cut in np.linspace(0, len(raw) - 1, 40).astype(int):
        p.write_bytes(raw[:cut])
        with pytest.raises(DpError) as info:
            load_npz(p)
        assert info.value.kind == "data"


def test_npz_not_npy_member(tmp_path):
    p = tmp_path / "z.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x.npy", b"just some text")
        z.writestr("y.npy", b"more")
    data_error(load_npz, p, match=(str(p),))


def test_npz_missing_key(tmp_path):
    p = tmp_path / "k.npz"
    np.savez(p, features=np.ones((3, 2)), labels=np.arange(3))
    err = data_error(load_npz, p, match=(str(p), "no array named 'x'", "'features'",
                                         "'labels'"))
    assert "found" in err.message
    data_error(load_npz, p, x="features", match=("no array named 'y'",))


def test_npz_object_dtype(tmp_path):
    p = tmp_path / "o.npz"
    np.savez(p, x=np.array([{"a": 1}, None], dtype=object), y=np.arange(2))
    data_error(load_npz, p, match=(str(p), "object dtype", "pickle"))


def test_npz_non_numeric_dtype(tmp_path):
    p = tmp_path / "s.npz"
    np.savez(p, x=np.array(["a", "b"]), y=np.arange(2))
    data_error(load_npz, p, match=(str(p), "<U1", "numeric"))


def test_npz_length_mismatch(tmp_path):
    p = tmp_path / "m.npz"
    np.savez(p, x=np.ones((100, 2)), y=np.arange(99))
    data_error(load_npz, p, match=(str(p), "different numbers of examples", "100", "99"))


def test_npz_empty(tmp_path):
    p = tmp_path / "e.npz"
    np.savez(p, x=np.ones((0, 4)), y=np.arange(0))
    data_error(load_npz, p, match=(str(p), "empty"))
    np.savez(p, x=np.float64(3.0), y=np.arange(1))
    data_error(load_npz, p, match=("single number", "example axis"))


def test_npz_non_finite(tmp_path):
    p = tmp_path / "n.npz"
    x = np.ones((5, 3))
    x[2, 1] = np.nan
    x[4, 0] = np.inf
    np.savez(p, x=x, y=np.arange(5))
    data_error(load_npz, p, match=(str(p), "non-finite", "nan", "[2, 1]"))
    y = np.zeros(5)
    y[3] = -np.inf
    np.savez(p, x=np.ones((5, 3)), y=y)
    data_error(load_npz, p, match=("array 'y'", "-inf", "[3]"))
    np.savez(p, x=np.full((2, 2), 1e300), y=np.arange(2))
    data_error(load_npz, p, match=("float32",))


# --------------------------------------------------------------------------------------- csv
def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_round_trip_with_header(tmp_path):
    p = write(tmp_path, "a.csv", "f1,f2,label\n0.5,1,3\n-2,1e-3,0\n\n7,8,1\n")
    ds = load_csv(p)
    assert ds.x.dtype == np.float32 and ds.x.shape == (3, 2)
    np.testing.assert_allclose(ds.x, [[0.5, 1], [-2, 1e-3], [7, 8]], rtol=1e-6)
    assert ds.y.dtype == np.int64 and ds.y.tolist() == [3, 0, 1]
    ds2 = load_csv(p, label="f1")
    assert ds2.y.dtype == np.float32 and ds2.y.tolist() == [0.5, -2.0, 7.0]
    np.testing.assert_allclose(ds2.x, [[1, 3], [1e-3, 0], [8, 1]], rtol=1e-6)


def test_csv_label_choices_without_header(tmp_path):
    p = write(tmp_path, "b.csv", "1,2,3\n4,5,6\n")
    assert load_csv(p, label="first").y.tolist() == [1, 4]
    assert load_csv(p, label=1).y.tolist() == [2, 5]
    assert load_csv(p, label=-1).y.tolist() == [3, 6]
    assert load_csv(p, label="last").x.tolist() == [[1, 2], [4, 5]]
    none = load_csv(p, label=None)
    assert none.y is None and none.x.shape == (2, 3)
    data_error(load_csv, p, label=3, match=("out of range", "3 columns"))
    data_error(load_csv, p, label="y", match=("no header row",))


def test_csv_round_trip_matches_numpy(tmp_path):
    rs = np.random.RandomState(0)
    x = rs.rand(50, 4).astype(np.float32)
    y = rs.randint(0, 3, 50)
    p = tmp_path / "r.csv"
    np.savetxt(p, np.column_stack([x, y]), delimiter=",", header="a,b,c,d,cls", comments="",
               fmt="%.9g")
    ds = load_csv(p, label="cls")
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)


def test_csv_missing_file(tmp_path):
    p = tmp_path / "missing.csv"
    err = data_error(load_csv, p, span=SPAN, match=(str(p), "does not exist"))
    assert err.span == SPAN


def test_csv_non_numeric_cell(tmp_path):
    p = write(tmp_path, "c.csv", "a,b\n1,2\n3,x7\n")
    data_error(load_csv, p, match=(str(p), "line 3", "column 2", "('b')", "'x7'",
                                   "expected a number"))
    q = write(tmp_path, "d.csv", "1,2\n3,\n")
    data_error(load_csv, q, match=("line 2", "column 2", "empty cell"))
    r = write(tmp_path, "e.csv", "1,oops\n3,4\n")      # not a header: it has a number
    err = data_error(load_csv, r, match=("line 1", "column 2", "'oops'"))
    assert err.notes


def test_csv_ragged(tmp_path):
    p = write(tmp_path, "r.csv", "1,2,3\n4,5,6\n7,8\n")
    data_error(load_csv, p, match=(str(p), "ragged", "line 3 has 2 columns", "expected 3"))


def test_csv_empty(tmp_path):
    data_error(load_csv, write(tmp_path, "e.csv", ""), match=("no data rows", "empty"))
    data_error(load_csv, write(tmp_path, "h.csv", "a,b\n"), match=("no data rows",
                                                                   "only a header"))
    data_error(load_csv, write(tmp_path, "one.csv", "1\n2\n"),
               match=("only one column",))


def test_csv_non_finite(tmp_path):
    p = write(tmp_path, "n.csv", "a,b,c\n1,2,0\n3,nan,1\n")
    data_error(load_csv, p, match=(str(p), "line 3", "column 2", "non-finite", "nan"))
    q = write(tmp_path, "i.csv", "1,2\n-inf,1\n")
    data_error(load_csv, q, match=("line 2", "column 1", "-inf"))
    r = write(tmp_path, "big.csv", "1e39,1\n")
    data_error(load_csv, r, match=("too large for float32",))


def test_csv_unknown_column_name(tmp_path):
    p = write(tmp_path, "h.csv", "a,b\n1,2\n")
    data_error(load_csv, p, label="target", match=("no column named 'target'", "'a'", "'b'"))


def test_csv_not_text(tmp_path):
    p = tmp_path / "bin.csv"
    p.write_bytes(b"1,2\n\xff\xfe\x00\x01")
    data_error(load_csv, p, match=(str(p), "not UTF-8", "byte offset 4"))


def test_csv_directory(tmp_path):
    data_error(load_csv, tmp_path, match=("directory",))


def test_no_raw_exception_on_garbage(tmp_path):
    rs = np.random.RandomState(0)
    p = tmp_path / "g.bin"
    for i in range(30):
        p.write_bytes(rs.bytes(rs.randint(0, 300)))
        for fn in (load_csv, load_npz):
            try:
                fn(p)
            except DpError as e:
                assert e.kind == "data"


def test_module_exports():
    assert set(data.__all__) >= {"Dataset", "load_digits", "load_digits_images", "batches"}
    assert os.path.exists(data.DIGITS_FILE)


def _npy_bytes(header: dict, payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def test_npz_huge_declared_shape_is_refused_before_allocating(tmp_path):
    p = tmp_path / "huge.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x.npy", _npy_bytes({"descr": "<f8", "fortran_order": False,
                                        "shape": (10**12, 1000)}, b"\0" * 64))
        z.writestr("y.npy", _npy_bytes({"descr": "<i8", "fortran_order": False,
                                        "shape": (8,)}, b"\0" * 64))
    data_error(load_npz, p, match=(str(p), "corrupt", "[1000000000000, 1000]", "64 bytes"))


def test_npz_fuzzed_bytes_never_escape(tmp_path):
    good = tmp_path / "good.npz"
    rs = np.random.RandomState(1)
    np.savez_compressed(good, x=rs.rand(20, 4), y=np.arange(20))
    raw = good.read_bytes()
    p = tmp_path / "f.npz"
    for _ in range(150):
        b = bytearray(raw)
        for _ in range(rs.randint(1, 4)):
            b[rs.randint(len(b))] = rs.randint(256)
        p.write_bytes(bytes(b))
        try:
            load_npz(p)
        except DpError as e:
            assert e.kind == "data"


def test_label_and_key_arguments_of_the_wrong_type(tmp_path):
    p = write(tmp_path, "b.csv", "1,2,3\n4,5,6\n")
    assert load_csv(p, label=1.0).y.tolist() == [2, 5]
    data_error(load_csv, p, label=1.5, match=("1.5", "expected 'last'"))
    q = tmp_path / "k.npz"
    np.savez(q, x=np.ones((2, 2)), y=np.arange(2))
    data_error(load_npz, q, y=3, match=("must be a string",))

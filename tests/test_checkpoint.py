"""Checkpoints: round trips, `.previous`, atomic writes, matching a program."""

import os

import numpy as np
import pytest

from dp.dsl.errors import DpError, Span
from dp.interpreter.training import checkpoint as ck
from dp.interpreter.training.checkpoint import (check_against, load_checkpoint,
                                       load_checkpoint_or_previous, save_checkpoint)

SPAN = Span("prog.dp", 2, 1, 2, 9)


def params(seed=0):
    rs = np.random.RandomState(seed)
    return {"W1": rs.randn(64, 128).astype(np.float32),
            "b1": rs.randn(128).astype(np.float32),
            "step_count": np.array([seed, 7], dtype=np.int64)}


def ck_error(fn, *args, match=(), **kw) -> DpError:
    with pytest.raises(DpError) as info:
        fn(*args, **kw)
    err = info.value
    assert err.kind == "checkpoint", err.message
    for m in (match if isinstance(match, tuple) else (match,)):
        assert m in err.message, f"{m!r} not in {err.message!r}"
    return err


# ---------------------------------------------------------------------------------- round trip
def test_round_trip(tmp_path):
    p = tmp_path / "model.safetensors"
    t = params()
    save_checkpoint(p, t, {"step": "300", "program_hash": "abc", "optimizer": "sgd"})
    got, meta = load_checkpoint(p)
    assert set(got) == set(t)
    for k in t:
        assert got[k].dtype == t[k].dtype and got[k].shape == t[k].shape
        np.testing.assert_array_equal(got[k], t[k])
    assert meta["step"] == "300" and meta["program_hash"] == "abc"
    assert meta["format"] == "dp-checkpoint-1"
    assert meta["sha256"] == ck.tensor_digest(t)


def test_round_trip_other_dtypes_and_shapes(tmp_path):
    p = tmp_path / "c.st"
    t = {"scalar": np.float32(2.5), "empty": np.zeros((0, 3), np.float32),
         "mask": np.array([True, False]), "f64": np.linspace(0, 1, 5),
         "u8": np.arange(10, dtype=np.uint8), "big_endian": np.arange(4, dtype=">i4"),
         "non_contiguous": np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2]}
    save_checkpoint(str(p), t, {})
    got, _ = load_checkpoint(str(p))
    for k, v in t.items():
        np.testing.assert_array_equal(got[k], np.asarray(v))
        assert got[k].shape == np.shape(v)
    assert got["big_endian"].dtype == np.dtype("<i4")


def test_digest_depends_on_names_shapes_dtypes():
    a = np.arange(6, dtype=np.float32)
    d = ck.tensor_digest
    assert d({"a": a}) != d({"b": a})
    assert d({"a": a}) != d({"a": a.reshape(2, 3)})
    assert d({"a": a}) != d({"a": a.view(np.int32)})
    assert d({"a": a, "b": a}) == d({"b": a, "a": a})


def test_previous_is_kept(tmp_path):
    p = tmp_path / "m.safetensors"
    save_checkpoint(p, params(1), {"step": "1"})
    assert not os.path.exists(ck.previous_path(p))
    save_checkpoint(p, params(2), {"step": "2"})
    save_checkpoint(p, params(3), {"step": "3"})
    assert load_checkpoint(p)[1]["step"] == "3"
    prev, meta = load_checkpoint(ck.previous_path(p))
    assert meta["step"] == "2"
    np.testing.assert_array_equal(prev["W1"], params(2)["W1"])
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "m.safetensors.previous"]


def test_missing_file(tmp_path):
    p = tmp_path / "none.safetensors"
    err = ck_error(load_checkpoint, p, span=SPAN, match=(str(p), "does not exist"))
    assert err.span == SPAN
    assert any("dp train" in n for n in err.notes)


def test_directory_is_refused(tmp_path):
    ck_error(load_checkpoint, tmp_path, match=("directory",))
    ck_error(save_checkpoint, tmp_path, params(), {}, match=("directory",))


def test_save_into_missing_directory(tmp_path):
    p = tmp_path / "no" / "such" / "dir.st"
    ck_error(save_checkpoint, p, params(), {}, match=(str(p), "does not exist"))


def test_save_refuses_non_finite_and_keeps_old(tmp_path):
    p = tmp_path / "m.st"
    save_checkpoint(p, params(1), {"step": "1"})
    before = p.read_bytes()
    bad = params(2)
    bad["b1"][5] = np.nan
    ck_error(save_checkpoint, p, bad, {"step": "2"}, match=("'b1'", "non-finite", "[5]"))
    assert p.read_bytes() == before
    assert not os.path.exists(ck.previous_path(p))


# ------------------------------------------------------------------------------------ atomicity
@pytest.mark.parametrize("fail_at", [1, 2])
def test_failed_replace_leaves_old_file(tmp_path, monkeypatch, fail_at):
    p = tmp_path / "m.safetensors"
    save_checkpoint(p, params(1), {"step": "1"})
    save_checkpoint(p, params(2), {"step": "2"})
    before, prev_before = p.read_bytes(), (tmp_path / "m.safetensors.previous").read_bytes()
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == fail_at:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    ck_error(save_checkpoint, p, params(3), {"step": "3"}, match=(str(p), "No space left"))
    monkeypatch.undo()
    assert len(calls) == fail_at
    assert p.read_bytes() == before
    assert load_checkpoint(p)[1]["step"] == "2"
    assert load_checkpoint(ck.previous_path(p))[1]["step"] in ("1", "2")
    if fail_at == 1:
        assert (tmp_path / "m.safetensors.previous").read_bytes() == prev_before
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "m.safetensors.previous"]


def test_failed_fsync_leaves_old_file(tmp_path, monkeypatch):
    p = tmp_path / "m.safetensors"
    save_checkpoint(p, params(1), {"step": "1"})
    before = p.read_bytes()

    def bad_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", bad_fsync)
    ck_error(save_checkpoint, p, params(2), {"step": "2"}, match=("Input/output error",))
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]


def test_crash_before_rename_leaves_stray_tmp_that_is_ignored(tmp_path, monkeypatch):
    """A kill between fsync and rename: `<path>` is intact, the stray `.tmp` is never read
    and is overwritten by the next save."""
    p = tmp_path / "m.safetensors"
    save_checkpoint(p, params(1), {"step": "1"})
    tmp = tmp_path / "m.safetensors.tmp"
    tmp.write_bytes(b"half a checkpoint")
    assert load_checkpoint(p)[1]["step"] == "1"
    save_checkpoint(p, params(2), {"step": "2"})
    assert not tmp.exists()
    assert load_checkpoint(p)[1]["step"] == "2"


def test_first_save_with_failing_rename_leaves_nothing(tmp_path, monkeypatch):
    p = tmp_path / "m.safetensors"

    def no_replace(src, dst):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", no_replace)
    ck_error(save_checkpoint, p, params(1), {}, match=("Permission denied",))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_fallback_to_previous(tmp_path):
    p = tmp_path / "m.safetensors"
    save_checkpoint(p, params(1), {"step": "1"})
    save_checkpoint(p, params(2), {"step": "2"})
    raw = bytearray(p.read_bytes())
    raw[-3] ^= 0x10
    p.write_bytes(bytes(raw))
    t, meta, used = load_checkpoint_or_previous(p)
    assert meta["step"] == "1" and used == ck.previous_path(p)
    os.remove(ck.previous_path(p))
    ck_error(load_checkpoint_or_previous, p, match=("checksum mismatch",))


def test_fallback_both_bad_has_a_note(tmp_path):
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"garbage")
    (tmp_path / "m.safetensors.previous").write_bytes(b"more garbage")
    err = ck_error(load_checkpoint_or_previous, p, span=SPAN)
    assert err.span == SPAN and any(".previous" in n for n in err.notes)


# ------------------------------------------------------------------------------------- matching
EXPECTED = {"W1": (64, 128), "b1": (128,), "step_count": (2,)}


def test_check_against_ok():
    check_against(params(), EXPECTED, "m.st")


def test_mismatch_shape():
    t = params()
    t["W1"] = np.zeros((64, 32), np.float32)
    err = ck_error(check_against, t, EXPECTED, "m.st", span=SPAN,
                   match=("'W1'", "[64, 128]", "[64, 32]", "m.st", "expects"))
    assert err.span == SPAN


def test_mismatch_missing_parameter():
    t = params()
    del t["b1"]
    ck_error(check_against, t, EXPECTED, "m.st", match=("no parameter 'b1'", "[128]"))


def test_mismatch_extra_parameter():
    t = params()
    t["W2"] = np.zeros((128, 10), np.float32)
    ck_error(check_against, t, EXPECTED, "m.st", match=("'W2'", "[128, 10]", "does not declare"))


def test_mismatch_several_problems_become_notes():
    t = {"W1": np.zeros((1, 1), np.float32), "zz": np.zeros(3)}
    err = ck_error(check_against, t, EXPECTED, "m.st", match=("'W1'",))
    joined = " ".join(err.notes)
    assert "'b1'" in joined and "'step_count'" in joined and "'zz'" in joined


def test_mismatch_non_finite_value_in_file(tmp_path):
    """A checkpoint with a NaN (written by another tool: dp refuses to save one) is refused
    at load, naming the tensor."""
    import safetensors.numpy

    t = params()
    t["b1"][17] = np.inf
    meta = {"format": "dp-checkpoint-1", "sha256": ck.tensor_digest(t)}
    p = tmp_path / "nan.safetensors"
    p.write_bytes(safetensors.numpy.save(t, metadata=meta))
    ck_error(load_checkpoint, p, match=("'b1'", "non-finite", "inf", "[17]"))

"""Golden messages for mistakes found when a program meets its data or its checkpoint:
`dp train` / `dp run` on tests/programs/runtime/NAME.dp print exactly NAME.err, exit 1."""

from __future__ import annotations

import shutil

import pytest

from conftest import ROOT, dp_here

RUNTIME = ROOT / "tests" / "programs" / "runtime"
CASES = [("train", "missing_data"), ("train", "bad_data"), ("train", "wrong_width"),
         ("train", "bad_setting"), ("train", "bad_optimizer"), ("run", "no_checkpoint"),
         ("train", "text_needs_steps"), ("train", "unknown_text"), ("train", "report_typo"),
         ("train", "mask_rate")]


@pytest.mark.parametrize("command,name", CASES, ids=[c[1] for c in CASES])
def test_golden_runtime_error(command, name):
    code, out, err = dp_here(command, f"tests/programs/runtime/{name}.dp", cwd=ROOT)
    assert err == (RUNTIME / f"{name}.err").read_text()
    assert code == 1 and "Traceback" not in err
    assert "training" not in out  # nothing ran


def test_check_also_checks_the_train_settings():
    code, out, err = dp_here("check", "tests/programs/runtime/bad_setting.dp", cwd=ROOT)
    assert (code, out) == (1, "")
    assert err == (RUNTIME / "bad_setting.err").read_text()


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_checkpoint_is_refused(tmp_path, damage):
    program = tmp_path / "net.dp"
    shutil.copy(RUNTIME / "no_checkpoint.dp", program)
    shutil.copy(RUNTIME / "narrow.csv", tmp_path / "narrow.csv")
    program.write_text(program.read_text().replace("R^4", "R^2"))
    code, _, err = dp_here("train", str(program))
    assert code == 0, err
    ckpt = tmp_path / "net.safetensors"
    data = bytearray(ckpt.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "flip":
        data[-3] ^= 0x10
    else:
        data = bytearray(b"\x80\x04not a checkpoint at all")
    ckpt.write_bytes(bytes(data))
    code, out, err = dp_here("run", str(program))
    assert code == 1 and out == ""
    assert err.startswith("error[checkpoint]: ") and str(ckpt) in err
    assert "Traceback" not in err
    expected = {"truncate": "truncated", "flip": "checksum mismatch", "garbage": "not a dp "
                "checkpoint"}[damage]
    assert expected in err


@pytest.mark.parametrize("flag,value,message", [
    ("--epochs", "0", "error[usage]: --epochs must be positive, but it is 0\n"),
    ("--steps", "-3", "error[usage]: --steps must be positive, but it is -3\n"),
    ("--seed", "-1", "error[usage]: --seed must be non-negative, but it is -1\n"),
])
def test_bad_overrides_are_usage_errors(flag, value, message):
    code, out, err = dp_here("train", "programs/digits_mlp.dp", flag, value, cwd=ROOT)
    assert (code, out, err) == (2, "", message)


def test_lr_override_is_validated_like_the_program():
    code, out, err = dp_here("train", "programs/digits_mlp.dp", "--lr", "-0.5", cwd=ROOT)
    assert code == 1 and out == ""
    assert err.startswith("error[value]: sgd lr must be positive, but it is -0.5\n"
                          "  --> programs/digits_mlp.dp:8:33\n")


def test_set_overrides_settings_and_optimizer_arguments(tmp_path):
    code, out, err = dp_here("train", "programs/digits_mlp.dp", "--set", "epochs=1", "--set",
                             "lr=0.05", "--set", "momentum=0.5", "--checkpoint",
                             str(tmp_path / "m.safetensors"), cwd=ROOT)
    assert code == 0, err
    assert "epoch 1/1" in out and "trained 47 steps" in out


@pytest.mark.parametrize("value, message", [
    ("lrr=0.5", "error[usage]: --set lrr: the program has no setting 'lrr'\n"
                "   = note: did you mean 'lr'?\n"
                "   = note: settings: batch, epochs, steps, seed, warmup, schedule, clip, "
                "patience; sgd: lr, momentum, "
                "weight_decay, nesterov\n"),
    ("batch=2.5", "error[usage]: --set batch=2.5: batch must be a whole number\n"),
    ("lr", "error[usage]: --set takes NAME=VALUE, e.g. --set lr=0.01, not 'lr'\n"),
    ("momentum=-1", "error[value]: sgd momentum must be non-negative, but it is -1.0\n"
                    "  --> programs/digits_mlp.dp:8:33\n"),
])
def test_bad_set_is_a_clear_error(value, message):
    code, out, err = dp_here("train", "programs/digits_mlp.dp", "--set", value, cwd=ROOT)
    assert err.startswith(message) and "training" not in out
    assert code == (1 if message.startswith("error[value]") else 2)


def test_a_checkpoint_in_a_folder_that_is_not_there_is_refused_before_training(tmp_path):
    code, out, err = dp_here("train", "programs/digits_mlp.dp", "--steps", "2", "--checkpoint",
                             str(tmp_path / "nowhere" / "x.safetensors"), cwd=ROOT)
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"error[usage]: the checkpoint {tmp_path}/nowhere/x.safetensors goes "
                          f"into {tmp_path}/nowhere, which is not a folder")
    assert "epoch" not in out

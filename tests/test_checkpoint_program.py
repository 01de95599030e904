"""A checkpoint belongs to the model that wrote it: `dp run`, `dp export` and `dp train
--resume` refuse one whose model has since been edited, even when every shape is the same
(relu to tanh), and accept it after edits that change nothing the model computes (comments,
layout, the train and run blocks, other modules). `--weights` loads the parameters anyway.
The errors of a checkpoint that is missing, damaged or of other shapes, in full."""

from __future__ import annotations

import pytest
from conftest import dp_here
from dp.dsl.loader import load_programs
from dp.interpreter.training.checkpoint import program_digest

PROGRAM = """\
# A small classifier of the 8x8 digits.
Net: R^64 -> R^10
Net(x) = FeedForward(FeedForward(x; m = 16); m = 10, act = identity)

train Net on digits(split = train):
  loss cross_entropy; optimizer sgd(lr = 0.1); batch 32; epochs 1

run:
  print params(Net)
"""

TANH = PROGRAM.replace("act = identity", "act = tanh")


@pytest.fixture
def trained(tmp_path):
    """A program and its checkpoint after 2 steps."""
    program = tmp_path / "net.dp"
    program.write_text(PROGRAM)
    code, _, err = dp_here("train", program, "--steps", "2")
    assert code == 0, err
    return program


def _other_program(program, line: str, carets: str) -> str:
    ckpt = program.with_suffix(".safetensors")
    return f"""\
error[checkpoint]: checkpoint '{ckpt}' was trained by a different program: the definition of \
Net, or of a module it uses, has changed since
  --> {program}:3:1
   |
 3 | {line}
   | {carets}
   = note: to use its parameters anyway, load them as weights: dp run {program} --weights \
{ckpt} (or dp train {program} --init-from {ckpt} to train on)
   = note: editing comments, the train or run blocks or other modules keeps a checkpoint; \
editing the model's modules does not
"""


def test_an_edited_body_with_the_same_shapes_is_refused(trained):
    trained.write_text(TANH)
    code, out, err = dp_here("run", trained)
    line = "Net(x) = FeedForward(FeedForward(x; m = 16); m = 10, act = tanh)"
    assert (code, out) == (1, "")
    assert err == _other_program(trained, line, "^" * len(line))


def test_dp_export_refuses_it_too(trained, tmp_path):
    trained.write_text(TANH)
    code, _, err = dp_here("export", trained, "Net", "-o", tmp_path / "net.onnx")
    assert code == 1 and err.startswith("error[checkpoint]: checkpoint ")
    assert not (tmp_path / "net.onnx").exists()


def test_weights_load_the_parameters_anyway(trained):
    trained.write_text(TANH)
    code, out, err = dp_here("run", trained, "--weights", trained.with_suffix(".safetensors"))
    assert (code, err) == (0, "")
    assert "params(Net) = 1,210" in out


def test_comments_layout_and_the_blocks_keep_the_checkpoint(trained):
    edited = (PROGRAM.replace("# A small classifier", "# Another comment\n\n# A classifier")
              .replace("m = 16); m = 10", "m = 16);  m = 10")
              .replace("epochs 1", "epochs 3").replace("print params(Net)",
                                                       "print accuracy(Net, digits(split = "
                                                       "test))")
              + "\nUnused: R^4 -> R^4\nUnused(x) = relu(x)\n")
    trained.write_text(edited)
    code, out, err = dp_here("run", trained)
    assert (code, err) == (0, "")
    assert out.startswith("accuracy(Net, digits(split = test)) = ")


def test_resume_goes_on_after_the_run_block_changes(trained):
    trained.write_text(PROGRAM.replace("print params(Net)", "print params(Net)\n  print 1"))
    code, out, err = dp_here("train", trained, "--steps", "4", "--resume")
    assert (code, err) == (0, "")
    assert f"resuming from {trained.with_suffix('.safetensors')} at step 2" in out


def test_resume_refuses_an_edited_model(trained):
    trained.write_text(TANH)
    code, _, err = dp_here("train", trained, "--steps", "4", "--resume")
    assert code == 1
    assert err.startswith(f"error[checkpoint]: --resume: {trained.with_suffix('.safetensors')} "
                          "was trained from another version of the program\n")


BLOCK = """\
Block: R^64 -> R^16
Block(x) = FeedForward(x; m = 16)

Net: R^64 -> R^10
Net(x) = FeedForward(Block(x); m = 10, act = identity)
"""


def _digest(tmp_path, text: str, sets=None) -> str:
    path = tmp_path / "d.dp"
    path.write_text(text)
    tprog, sources = load_programs([str(path)], sets)
    return program_digest(tprog, sources, "Net", sets)


def test_the_digest_covers_the_modules_the_model_uses(tmp_path):
    """The definitions of the model and the modules it uses, as parsed; not where they are,
    what surrounds them or what else the program holds."""
    base = _digest(tmp_path, BLOCK)
    moved = BLOCK.split("\n\n")[1] + "\n# the block\n" + BLOCK.split("\n\n")[0] + "\n"
    assert _digest(tmp_path, moved) == base
    assert _digest(tmp_path, BLOCK + "\nOther: R^2 -> R^2\nOther(x) = x\n") == base
    assert _digest(tmp_path, BLOCK.replace("Block(x) = ", "Block(x) =\n  ")) == base
    assert _digest(tmp_path, BLOCK.replace("(x; m = 16)", "(x; m = 16, act = tanh)")) != base
    assert _digest(tmp_path, BLOCK.replace("act = identity", "act = relu")) != base


def test_a_configuration_chosen_with_set_is_part_of_the_model(tmp_path):
    text = ("Net: R^64 -> R^10\nNet(x; act: R -> R = relu) = FeedForward(x; m = 10, "
            "act = act)\n\ntrain Net on digits(split = train):\n  loss cross_entropy; "
            "optimizer sgd(lr = 0.1); batch 32; epochs 1\n")
    assert _digest(tmp_path, text, {"act": "tanh"}) != _digest(tmp_path, text)
    assert _digest(tmp_path, text, {"act": "relu"}) == _digest(tmp_path, text)


# --- the errors of a checkpoint that cannot be used, in full ---------------------------------
def test_a_missing_checkpoint(tmp_path):
    program = tmp_path / "net.dp"
    program.write_text(PROGRAM)
    code, out, err = dp_here("run", program)
    assert (code, out) == (1, "")
    assert err == (f"error[checkpoint]: checkpoint file '{program.with_suffix('.safetensors')}' "
                   "does not exist\n   = note: run `dp train` first to create it\n")


def test_a_damaged_checkpoint(trained):
    ckpt = trained.with_suffix(".safetensors")
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor's data
    ckpt.write_bytes(bytes(data))
    code, out, err = dp_here("run", trained)
    assert (code, out) == (1, "")
    assert err == (f"error[checkpoint]: checkpoint data is corrupt (checksum mismatch) in "
                   f"'{ckpt}'\n")  # one save, so no previous checkpoint to point to


def test_a_checkpoint_of_other_shapes(trained):
    trained.write_text(PROGRAM.replace("m = 16", "m = 8"))
    ckpt = trained.with_suffix(".safetensors")
    code, out, err = dp_here("run", trained)
    assert (code, out) == (1, "")
    assert err == f"""\
error[checkpoint]: parameter 'Net.feedforward1.W' has the wrong shape in checkpoint '{ckpt}': \
the program expects [8, 64], the checkpoint has [16, 64]
   = note: parameter 'Net.feedforward1.b' has the wrong shape in checkpoint '{ckpt}': the \
program expects [8], the checkpoint has [16]
   = note: parameter 'Net.feedforward2.W' has the wrong shape in checkpoint '{ckpt}': the \
program expects [10, 8], the checkpoint has [10, 16]
"""


def test_a_checkpoint_holding_the_texts_hash_loads_into_that_text(trained):
    """Checkpoints written before the digest hold the sha256 of the program's text: the
    same text loads them; any edit (here a comment) cannot tell what changed, so refuses."""
    import hashlib

    from dp.interpreter.training.checkpoint import load_checkpoint, save_checkpoint

    ckpt = trained.with_suffix(".safetensors")
    tensors, meta = load_checkpoint(ckpt)
    meta["program_sha256"] = hashlib.sha256(PROGRAM.encode("utf-8")).hexdigest()
    save_checkpoint(ckpt, tensors, {k: v for k, v in meta.items() if k != "sha256"})
    assert dp_here("run", trained)[0] == 0
    trained.write_text(PROGRAM + "# one more comment\n")
    assert dp_here("run", trained)[0] == 1

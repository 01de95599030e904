"""Weights by parameter path on the command line: `dp run FILE --weights W` (with or without
a train block), `dp train FILE --init-from W`, and `--checkpoint` refused where there is no
train block to give it a meaning."""

from __future__ import annotations

import dp
import numpy as np
import pytest
from conftest import ROOT, dp_here, run_dp
from dp.dsl.loader import load
from dp.interpreter.training.checkpoint import load_checkpoint
from safetensors.numpy import save_file

MLP = ROOT / "programs" / "digits_mlp.dp"
UNTRAINED = """Net: R^64 -> R^10
Net(x) = FeedForward(FeedForward(x; m = 16); act = identity)
run:
  print accuracy(Net, digits(split = test))
"""


def _accuracy(net) -> str:
    """What `print accuracy(Net, digits(split = test))` prints for these parameters."""
    from dp.interpreter.data.sources import dataset
    from dp.interpreter.training.reports import accuracy_counts

    tprog = load([str(MLP)])
    ds = dataset(tprog.runs[0].prints[0].items[0].data, str(ROOT / "programs"), (64,))
    right, total = accuracy_counts(net(ds.x), ds.y)
    return f"{right / total:.4f} ({right}/{total})"


@pytest.fixture
def untrained(tmp_path):
    path = tmp_path / "net.dp"
    path.write_text(UNTRAINED)
    net = dp.load(path).model(seed=7)
    for a in net.params.values():  # weights no seed gives
        a[...] = np.random.default_rng(int(a.size)).normal(size=a.shape) * 0.3
    weights = tmp_path / "w.safetensors"
    save_file({p: a.copy() for p, a in net.params.items()}, weights)  # plain, no dp metadata
    return path, weights, net


def test_weights_for_a_program_without_a_train_block(untrained):
    path, weights, net = untrained
    code, out, err = dp_here("run", path, "--weights", weights)
    assert (code, err) == (0, "")
    assert out == (f"Net is not trained here: its parameters are read from {weights}\n"
                   f"accuracy(Net, digits(split = test)) = {_accuracy(net)}\n")
    code, seeded, _ = dp_here("run", path)
    assert code == 0 and seeded.splitlines()[1] != out.splitlines()[1]


def test_checkpoint_without_a_train_block_is_refused(untrained):
    path, weights, _ = untrained
    code, out, err = run_dp("run", path, "--checkpoint", weights)
    assert (code, out) == (2, "")
    assert err == (f"error[usage]: {path} has no train block, so --checkpoint has no model to "
                   f"load into\n"
                   f"   = note: give the run's modules their parameters with --weights "
                   f"W.safetensors (tensors named by parameter path)\n")


@pytest.mark.parametrize("other,flag", [(("--checkpoint", "x.safetensors"), "--checkpoint"),
                                        (("--seed", "3"), "--seed")])
def test_weights_go_with_no_other_source_of_parameters(untrained, other, flag):
    path, weights, _ = untrained
    code, out, err = dp_here("run", path, "--weights", weights, *other)
    assert (code, out) == (2, "")
    assert err == f"error[usage]: --weights gives every parameter: it cannot go with {flag}\n"


def test_a_mismatch_is_one_report_and_runs_nothing(untrained, tmp_path):
    path, _, net = untrained
    tensors = {p: a.copy() for p, a in net.params.items()}
    tensors.pop("Net.feedforward2.W")
    tensors["Net.feedforward1.b"] = np.zeros(3, np.float32)
    tensors["head.W"] = np.zeros((2, 2), np.float32)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, bad)
    code, out, err = dp_here("run", path, "--weights", bad)
    assert (code, out) == (1, "")
    assert err == (f"error[weights]: the tensors of '{bad}' do not match the parameters of "
                   f"Net: 1 missing, 1 extra, 1 misshapen\n"
                   f"   = note: missing: 'Net.feedforward2.W' [10, 16]\n"
                   f"   = note: extra: 'head.W' [2, 2]\n"
                   f"   = note: wrong shape: 'Net.feedforward1.b' is [3], Net expects [16]\n")


def test_weights_that_are_not_there_or_not_safetensors(untrained, tmp_path):
    path, _, _ = untrained
    code, _, err = dp_here("run", path, "--weights", tmp_path / "none.safetensors")
    assert code == 1
    assert err == f"error[checkpoint]: weights file '{tmp_path / 'none.safetensors'}' does " \
                  f"not exist\n"
    pickle = tmp_path / "w.pt"
    pickle.write_bytes(b"\x80\x04\x95" + bytes(20))
    code, _, err = dp_here("run", path, "--weights", pickle)
    assert code == 1 and "it looks like a Python pickle" in err


def test_weights_replace_the_checkpoint_of_a_trained_program(tmp_path, mlp_checkpoint):
    """With a train block, --weights is used instead of the program's checkpoint (the
    trained one here, read as weights: its optimizer state is left out)."""
    program = tmp_path / "digits.dp"
    program.write_text(MLP.read_text())  # its checkpoint (beside it) does not exist
    code, _, err = dp_here("run", program)
    assert code == 1 and "does not exist" in err
    ckpt = mlp_checkpoint
    code, out, err = dp_here("run", program, "--weights", ckpt)
    assert (code, err) == (0, "")
    expected = _accuracy(dp.load(MLP).model(weights=ckpt))
    assert out.splitlines()[0] == f"accuracy(Digits, digits(split = test)) = {expected}"
    code, shipped, _ = dp_here("run", MLP, "--checkpoint", ckpt)
    assert code == 0 and shipped == out


def test_train_starts_from_the_weights(tmp_path):
    start = dp.load(MLP).model(seed=11)
    weights = tmp_path / "start.safetensors"
    save_file({p: a.copy() for p, a in start.params.items()}, weights)
    a, b, c = (tmp_path / f"{n}.safetensors" for n in "abc")
    assert dp_here("train", MLP, "--steps", "2", "--init-from", weights,
                   "--checkpoint", a)[0] == 0
    assert dp_here("train", MLP, "--steps", "2", "--checkpoint", b)[0] == 0
    assert dp_here("train", MLP, "--steps", "2", "--seed", "11", "--checkpoint", c)[0] == 0
    got, from_seed, from_seed_11 = (load_checkpoint(p)[0] for p in (a, b, c))

    def distance(tensors):  # from the given weights, over the weight matrices
        return max(np.abs(tensors[p] - start.params[p]).max() for p in start.params
                   if p.endswith(".W"))

    # two small steps from the given weights, as from the seed that drew them; far from
    # where the program's own seed starts
    assert 0 < distance(got) < 0.05 and distance(from_seed_11) < 0.05
    assert distance(from_seed) > 0.2


def test_init_from_is_checked_and_does_not_go_with_resume(tmp_path):
    weights = tmp_path / "w.safetensors"
    save_file({"Digits.feedforward1.W": np.zeros((128, 64), np.float32)}, weights)
    code, out, err = dp_here("train", MLP, "--init-from", weights, "--checkpoint",
                             tmp_path / "x.safetensors")
    assert code == 1 and out == ""
    assert err.startswith(f"error[weights]: the tensors of '{weights}' do not match the "
                          f"parameters of Digits: 3 missing\n")
    code, _, err = dp_here("train", MLP, "--init-from", weights, "--resume")
    assert code == 2
    assert err == ("error[usage]: --init-from starts a new run from weights and --resume goes "
                   "on from the checkpoint: give one of them\n")

"""dropout(x; p): inverted dropout in training, the identity in evaluation, its masks a pure
function of (seed, step, site, index), so that runs and resumed runs are bitwise the same; the
transformer modules' `dropout` real argument, 0.0 by default (their plans unchanged)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from conftest import ROOT, dp_here
from dp.dsl import DpError, load_text
from dp.interpreter.commands.repl import Session
from dp.interpreter.core.execute import Executable
from dp.interpreter.core.kernels import dropout as K
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from dp.interpreter.core.primitives import get
from dp.interpreter.training.metrics import metrics_path
from gradcheck import check_grads

MLP = """
Net: R^64 -> R^10
Net(x) = FeedForward(dropout(FeedForward(x) : R^32; p = 0.5); act = identity)
"""
PLAIN = MLP.replace("dropout(FeedForward(x) : R^32; p = 0.5)", "(FeedForward(x) : R^32)")


def _error(text: str) -> DpError:
    with pytest.raises(DpError) as info:
        load_text(text)
    return info.value


# --- the primitive ----------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_mean_is_kept_and_a_fraction_p_is_dropped(p, dtype):
    x = np.random.default_rng(0).uniform(0.5, 1.5, (100, 1000)).astype(dtype)
    y, mask = get("dropout").forward(x, p=p, site=0, key=(0, 3))
    assert y.dtype == dtype and y.shape == x.shape
    dropped = y == 0
    # 100,000 entries: the fraction's standard deviation is at most 0.0016
    assert abs(dropped.mean() - p) < 0.01
    np.testing.assert_array_equal(y[~dropped], x[~dropped] * dtype(1 / (1 - p)))
    assert abs(y.mean() / x.mean() - 1) < 0.02  # inverted dropout keeps the expected value
    assert set(np.unique(mask)) == {0, dtype(1 / (1 - p))}


def test_masks_are_keyed_by_seed_step_and_site_and_by_nothing_else():
    d = get("dropout")
    x = np.ones((64, 50))
    first = d.forward(x, p=0.5, site=0, key=(1, 7))[0]
    np.testing.assert_array_equal(first, d.forward(x, p=0.5, site=0, key=(1, 7))[0])
    for site, key in ((1, (1, 7)), (0, (1, 8)), (0, (2, 7))):
        other = d.forward(x, p=0.5, site=site, key=key)[0]
        assert 0.4 < (other == first).mean() < 0.6  # independent: agree half the time
    # an entry's mask depends on its flat index only, not on the batch around it
    np.testing.assert_array_equal(d.forward(x[:10], p=0.5, site=0, key=(1, 7))[0], first[:10])


def test_the_kernel_is_splitmix64_of_the_key_and_the_index():
    """A Python reference of kernels/dropout.py with big integers."""
    m64 = (1 << 64) - 1
    golden = 0x9E3779B97F4A7C15

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m64
        return z ^ (z >> 31)

    seed, step, site = 5, 123456, 2
    k = mix((seed * golden + 1) & m64)
    k = mix(k ^ ((step * golden + 2) & m64))
    k = mix(k ^ ((site * golden + 3) & m64))
    want = [0.0 if (mix((k + (i + 1) * golden) & m64) >> 11) * 2.0 ** -53 < 0.3 else 2.0
            for i in range(200)]
    got = np.empty(200)
    K.mask(seed, step, site, 0.3, 2.0, got)
    np.testing.assert_array_equal(got, want)


def test_without_a_key_it_is_the_identity_and_its_gradient_passes_through():
    d = get("dropout")
    x = np.random.default_rng(1).standard_normal((4, 5))
    y, saved = d.forward(x, p=0.5, site=0, key=None)
    assert y is x and saved is None
    g = np.ones_like(x)
    assert d.backward(g, y, (x,), (True,), saved=None, p=0.5, site=0, key=None)[0] is g


def test_the_gradient_with_a_fixed_mask_matches_central_differences():
    d = get("dropout")
    x = np.random.default_rng(2).standard_normal((3, 4, 5))

    def fn(x):
        return d.forward(x, p=0.4, site=1, key=(3, 9))[0]

    def vjp(c, out, xs):
        y, saved = d.forward(xs[0], p=0.4, site=1, key=(3, 9))
        return d.backward(c, y, xs, (True,), saved=saved, p=0.4, site=1, key=(3, 9))

    check_grads(fn, (x,), vjp, rtol=1e-6, name="dropout")


# --- in a model: training and evaluation ------------------------------------------------------
def _models():
    a, b = (Model(load_text(t), "Net", dtype=np.float64) for t in (MLP, PLAIN))
    a.init(0)
    b.init(0)
    return a, b


def test_evaluation_is_the_network_without_dropout():
    with_dropout, without = _models()
    assert with_dropout.specs.keys() == without.specs.keys()  # dropout has no parameters
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (16, 64)), rng.integers(0, 10, 16)
    np.testing.assert_array_equal(with_dropout.predict(x), without.predict(x))
    assert with_dropout.loss("cross_entropy", x, y) == without.loss("cross_entropy", x, y)
    # a training step (a key) drops; without one it is the evaluation's loss and gradient
    trained = with_dropout.loss_and_grad("cross_entropy", x, y, key=(0, 0))
    assert trained != without.loss("cross_entropy", x, y)
    assert with_dropout.loss_and_grad("cross_entropy", x, y) == without.loss_and_grad(
        "cross_entropy", x, y)
    np.testing.assert_array_equal(with_dropout.grad_flat, without.grad_flat)


def test_a_training_step_is_a_function_of_the_seed_and_the_step():
    model, _ = _models()
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (16, 64)), rng.integers(0, 10, 16)
    first = model.loss_and_grad("cross_entropy", x, y, key=(4, 10))
    grad = model.grad_flat.copy()
    assert model.loss_and_grad("cross_entropy", x, y, key=(4, 11)) != first
    assert model.loss_and_grad("cross_entropy", x, y, key=(4, 10)) == first
    np.testing.assert_array_equal(model.grad_flat, grad)


def test_the_gradient_of_a_training_step_matches_central_differences():
    """The whole plan, with its mask fixed by the key, against the loss it computes."""
    model, _ = _models()
    plan = lower(model.tprog, "Net", 3)
    ex = Executable(plan, np.float64)
    ex.bind(model.params)
    x = np.random.default_rng(5).uniform(0, 1, (3, 64))
    assert sum(e.prim == "dropout" for e in plan.eqns) == 1
    w = [model.params[p] for p in plan.params]

    def out(*ws):
        ex.bind(dict(zip(plan.params, ws, strict=True)))
        return ex.outputs(ex.forward(x, key=(1, 2)))[0]

    def vjp(c, o, ws):
        ex.bind(dict(zip(plan.params, ws, strict=True)))
        grads = ex.backward(ex.forward(x, key=(1, 2)), seed=c)
        return tuple(grads[v.id] for v in plan.params.values())

    check_grads(out, tuple(w), vjp, rtol=1e-5, name="a plan with dropout")


def test_the_repl_and_the_python_api_evaluate_without_dropping():
    out = io.StringIO()
    session = Session(out=out, err=io.StringIO())
    for line in ("x: R^6", "sum(abs(dropout(x; p = 0.9) - x))"):
        session.feed(line)
    assert out.getvalue().rstrip().endswith("0.")
    import dp
    net = dp.loads(MLP).model("Net", seed=0)
    x = np.random.default_rng(0).uniform(0, 1, (4, 64)).astype(np.float32)
    plain = dp.loads(PLAIN).model("Net", seed=0)
    np.testing.assert_array_equal(net(x), plain(x))


# --- in the language --------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("Net: R^4 -> R^4\nNet(x) = dropout(x; p = 1.0)\n",
     "dropout's p is the probability of zeroing an entry, at least 0 and below 1, but it is 1 "
     "here"),
    ("Net: R^4 -> R^4\nNet(x) = dropout(x; q = 0.5)\n", "dropout has no argument 'q'; it has p"),
    ("Net: R^4 -> R^4\nNet(x; k = 2) = dropout(x; p = k)\n", "p of dropout must be a number"),
    ("Block: R^4 -> R^4\nBlock(x; rate = 0.5) = dropout(x; p = rate)\n"
     "Net: R^4 -> R^4\nNet(x) = Block(x; rate = 1.5)\n",
     "dropout's p is the probability of zeroing an entry, at least 0 and below 1, but it is 1.5 "
     "here"),
    ("Block: R^4 -> R^4\nBlock(x; rate = 0.5) = x * rate\n",
     "rate is a real argument of Block: a number that is passed on by name, as in dropout(x; "
     "p = rate), not a value"),
    ("Block: R^4 -> R^4\nBlock(x; rate = 0.5) = dropout(x; p = rate)\n"
     "Net: R^4 -> R^4\nNet(x; k = 3, q = 0.1) = Block(x; rate = k)\n",
     "rate of Block must be a number or a real argument of Net"),
    ("Net: R^4 -> R^4\nNet(x) = FeedForward(x; act = dropout)\n",
     "dropout cannot be passed as a module: apply it to its arguments, dropout(x; p = ...)"),
])
def test_misuses_are_check_errors(text, message):
    assert _error(text).message == message


def test_a_real_argument_passes_its_value_down_to_the_dropout():
    tprog = load_text("""
Block: R^4 -> R^4
Block(x; rate = 0.25) = dropout(x; p = rate)
Net: R^4 -> R^4
Net(x; rate = 0.5) = Block(Block(x); rate = rate) + Block(x; rate = 0.0)
""")
    eqns = [e for e in lower(tprog, "Net", 2).eqns if e.prim == "dropout"]
    assert [(dict(e.params)["p"], dict(e.params)["site"]) for e in eqns] == [(0.25, 0),
                                                                             (0.5, 1)]


def test_transformers_take_dropout_and_default_to_none():
    tprog = load_text("""
Tiny: (R^8)^6 -> (R^8)^6
Tiny(xs) = Transformer(xs; layers = 2, heads = 2, ff = 16, dropout = 0.1)
Plain: (R^8)^6 -> (R^8)^6
Plain(xs) = Transformer(xs; layers = 2, heads = 2, ff = 16)
Post: Token[7]^6 -> (R^8)^6
Post(ts) = BERT(ts; d = 8, layers = 1, heads = 2, ff = 16, dropout = 0.2)
""")
    drops = [e for e in lower(tprog, "Tiny", 2).eqns if e.prim == "dropout"]
    assert len(drops) == 5 and {dict(e.params)["p"] for e in drops} == {0.1}  # 1 + 2 * 2
    assert [e.prim for e in lower(tprog, "Plain", 2).eqns].count("dropout") == 0
    assert [e.prim for e in lower(tprog, "Post", 2).eqns].count("dropout") == 3
    plain, tiny = (lower(tprog, n, 1).specs.keys() for n in ("Plain", "Tiny"))
    assert [p.split(".", 1)[1] for p in plain] == [p.split(".", 1)[1] for p in tiny]
    code, out, err = dp_here("check", "stdlib/attention.dp", cwd=ROOT)
    assert code == 0, err
    assert "  addnorm1 = AddNorm: (R^d)^n -> (R^d)^n; f = SelfAttention, dropout = dropout\n" in out


# --- training and resuming --------------------------------------------------------------------
PROGRAM = MLP + """
train Net on digits(split = train):
  loss cross_entropy; optimizer adam(lr = 0.003); batch 32; epochs 4; seed 2

run:
  print accuracy(Net, digits(split = test))
"""


def _losses(ckpt: Path) -> list:
    lines = Path(metrics_path(str(ckpt))).read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines) if r["kind"] == "step"]


def test_training_with_dropout_is_reproducible_and_resumes_bitwise(tmp_path):
    program = tmp_path / "net.dp"
    program.write_text(PROGRAM)
    runs = {}
    for name in ("one", "two"):
        ckpt = tmp_path / f"{name}.safetensors"
        code, out, err = dp_here("train", str(program), "--checkpoint", str(ckpt))
        assert code == 0, err
        runs[name] = ckpt
    accuracy = float(re.search(r"= ([0-9.]+) \(", out)[1])
    assert accuracy > 0.9
    resumed = tmp_path / "resumed.safetensors"
    code, out, err = dp_here("train", str(program), "--checkpoint", str(resumed),
                             "--set", "epochs=2")
    assert code == 0, err
    code, out, err = dp_here("train", str(program), "--checkpoint", str(resumed), "--resume")
    assert code == 0, err
    assert "resuming from" in out
    one = safetensors.numpy.load_file(str(runs["one"]))
    for other in (runs["two"], resumed):
        tensors = safetensors.numpy.load_file(str(other))
        assert sorted(tensors) == sorted(one)
        for k in one:
            assert np.array_equal(one[k], tensors[k]), k
    assert _losses(runs["one"]) == _losses(runs["two"]) == _losses(resumed)
    # the same run with another seed drops other entries
    code, out, err = dp_here("train", str(program), "--checkpoint",
                             str(tmp_path / "other.safetensors"), "--set", "seed=3")
    assert _losses(tmp_path / "other.safetensors") != _losses(runs["one"])


def test_dp_run_evaluates_without_dropout(tmp_path):
    program = tmp_path / "net.dp"
    program.write_text(PROGRAM.replace("epochs 4", "epochs 1") + "  print loss(Net, "
                       "digits(split = test))\n")
    ckpt = tmp_path / "net.safetensors"
    code, trained, err = dp_here("train", str(program), "--checkpoint", str(ckpt))
    assert code == 0, err
    code, ran, err = dp_here("run", str(program), "--checkpoint", str(ckpt))
    assert code == 0, err
    report = trained[trained.index("accuracy(Net"):]
    assert report == ran[ran.index("accuracy(Net"):]  # the same numbers, run after run

"""The Python API (`import dp`): networks of every shipped program give what `dp run` gives,
vector-Jacobian products and loss gradients agree with central differences in float64,
weights go in and out by parameter path, and every mistake is a dp.Error printed as the
command line prints it."""

from __future__ import annotations

import struct
import subprocess
import sys

import dp
import numpy as np
import pytest
from conftest import ROOT, dp_here
from dp.dsl.loader import load
from dp.interpreter.core.model import Model
from dp.interpreter.training.checkpoint import load_checkpoint
from dp.interpreter.training.train import load_trained
from safetensors.numpy import save_file

PROGRAMS = sorted((ROOT / "programs").glob("*.dp"))
MLP = str(ROOT / "programs" / "digits_mlp.dp")


def _example_inputs(model: Model, batch: int, rng) -> list[np.ndarray]:
    return [rng.integers(0, t.vocab, (batch,) + s) if t.vocab is not None else
            rng.normal(size=(batch,) + s) for s, t in zip(model.arg_shapes, model.sig.args)]


def _models(path) -> list[str]:
    """The module a program trains, else the ones its run block runs."""
    tprog = load([str(path)])
    if tprog.train is not None:
        return [tprog.train.model]
    return sorted({r.model for b in tprog.runs for p in b.prints for r in p.items if r.model})


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.stem)
def test_every_shipped_program_runs_as_dp_run_runs_it(path):
    """`prog.model(name, seed=0)(x)` is `Model.predict` of the model `dp run` builds."""
    prog, tprog = dp.load(path), load([str(path)])
    for name in _models(path):
        reference = Model(tprog, name)
        reference.init(0)
        xs = _example_inputs(reference, 2, np.random.default_rng(1))
        net = prog.model(name, seed=0)
        out = net(*xs)
        assert out.shape == (2,) + reference.out_shape and out.dtype == np.float32
        np.testing.assert_array_equal(out, reference.predict(*xs))
        assert net.params.keys() == reference.params.keys()


def test_a_trained_checkpoint_gives_what_dp_run_loads(mlp_checkpoint):
    ckpt = mlp_checkpoint
    prog = dp.load(MLP)
    net = prog.model(weights=ckpt)
    assert net.name == "Digits" and net.signature == "Digits: R^64 -> R^10"
    reference = Model(load([MLP]), "Digits")
    load_trained(reference, str(ckpt))
    x = np.random.default_rng(0).normal(size=(5, 64))
    np.testing.assert_array_equal(net(x), reference.predict(x))
    for path, view in net.params.items():
        np.testing.assert_array_equal(view, reference.params[path])


def test_params_are_views_of_the_network():
    net = dp.load(MLP).model(seed=0)
    x = np.ones((1, 64))
    before = net(x)
    net.params["Digits.feedforward2.b"][3] += 1.0
    assert net(x)[0, 3] == pytest.approx(before[0, 3] + 1.0, abs=1e-5)


# ------------------------------------------------------------------------ gradients (float64)
VJP_PROGRAM = """
Mixed: (R^(1, 8, 8), (R^6)^4) -> R^3
Mixed(img, xs) =
  v = flatten(MaxPool(Conv(img; c2 = 2)))
  h = Collapse(SequenceRNN(xs; cell = SimpleRNN, h = 5); over = seq_mean)
  FeedForward(v : R^32; m = 3, act = tanh) * FeedForward(h; m = 3, act = identity)

Attend: (R^8)^4 -> (R^8)^4
Attend(xs) = PreNormBlock(xs; heads = 2, ff = 8)

Chars: Token[7]^5 -> Token[7]^5
Chars(ts) = LanguageModel(ts; d = 8, body = Transformer(; layers = 1, heads = 2, ff = 8,
                                                        mask = causal))
"""


def _central(f, x: np.ndarray, direction: np.ndarray, eps: float = 1e-6) -> float:
    return (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)


@pytest.fixture(scope="module")
def vjp_program():
    return dp.loads(VJP_PROGRAM, "vjp.dp")


@pytest.mark.parametrize("name", ["Digits", "Mixed", "Attend", "Chars"])
def test_vjp_agrees_with_central_differences(vjp_program, name):
    """For a random cotangent c: dx . v and dparams . u are the derivatives of
    sum(c * f(x, params)) along random directions v (each real input) and u (all parameters
    at once, then a few single entries)."""
    prog = dp.load(MLP) if name == "Digits" else vjp_program
    net = prog.model(name, seed=3, dtype="float64")
    rng = np.random.default_rng(4)
    xs = _example_inputs(net._model, 3, rng)
    out, pullback = net.vjp(*xs)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, net(*xs), rtol=0, atol=1e-12)
    cot = rng.normal(size=out.shape)
    dxs, dparams = pullback(cot)
    dxs = dxs if isinstance(dxs, tuple) else (dxs,)

    def objective_of_input(i):
        return lambda xi: float(np.sum(cot * net(*xs[:i], xi, *xs[i + 1:])))

    for i, (x, dx) in enumerate(zip(xs, dxs, strict=True)):
        if x.dtype.kind == "i":
            assert dx is None  # token ids have no gradient
            continue
        v = rng.normal(size=x.shape)
        assert np.sum(dx * v) == pytest.approx(_central(objective_of_input(i), x, v), rel=1e-6)

    params = net.params
    start = {p: a.copy() for p, a in params.items()}

    def objective_of_params(shift: dict):
        for p, a in params.items():
            a[...] = start[p] + shift.get(p, 0)
        return float(np.sum(cot * net(*xs)))

    u = {p: rng.normal(size=a.shape) for p, a in params.items()}
    along = _central(lambda t: objective_of_params({p: t * d for p, d in u.items()}), 0.0, 1.0)
    assert sum(np.sum(dparams[p] * u[p]) for p in u) == pytest.approx(along, rel=1e-6)
    for p in list(params)[:: max(1, len(params) // 4)]:
        at = tuple(rng.integers(0, n) for n in params[p].shape)
        e = np.zeros(params[p].shape)
        e[at] = 1.0
        one = _central(lambda t, p=p, e=e: objective_of_params({p: t * e}), 0.0, 1.0)
        assert dparams[p][at] == pytest.approx(one, rel=1e-5, abs=1e-8), p
    objective_of_params({})


def test_the_pullback_can_be_called_again(vjp_program):
    net = vjp_program.model("Attend", seed=0)
    x = np.random.default_rng(0).normal(size=(2, 4, 8))
    out, pullback = net.vjp(x)
    dx1, dp1 = pullback(np.ones_like(out))
    dx2, dp2 = pullback(2 * np.ones_like(out))
    np.testing.assert_allclose(dx2, 2 * dx1, rtol=1e-6)
    np.testing.assert_allclose(dp2["Attend.prenormblock.prenorm1.layernorm.g"],
                               2 * dp1["Attend.prenormblock.prenorm1.layernorm.g"], rtol=1e-6)


def test_value_and_grad_is_the_train_blocks_loss_and_its_gradient():
    net = dp.load(MLP).model(seed=0, dtype="float64")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 64)), rng.integers(0, 10, 6)
    loss, grads = net.value_and_grad(x, y)  # the train block's cross_entropy
    scores = net(x)
    logp = scores - scores.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert loss == pytest.approx(-logp[np.arange(6), y].mean(), rel=1e-12)
    # the same gradient as a vjp with the cotangent of the mean cross-entropy
    cot = (np.exp(logp) - np.eye(10)[y]) / 6
    _, pullback = net.vjp(x)
    _, expected = pullback(cot)
    for p, g in grads.items():
        np.testing.assert_allclose(g, expected[p], rtol=1e-9, atol=1e-12)
    grads["Digits.feedforward1.W"][...] = 7  # a copy: the next call is not changed by it
    _, again = net.value_and_grad(x, y)
    np.testing.assert_allclose(again["Digits.feedforward1.W"], expected["Digits.feedforward1.W"])


def test_value_and_grad_with_squared_error_and_its_errors(vjp_program):
    net = vjp_program.model("Attend", seed=0, dtype="float64")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2, 4, 8)), rng.normal(size=(2, 4, 8))
    with pytest.raises(dp.Error) as info:
        net.value_and_grad(x, y)  # the program has no train block: no default loss
    assert str(info.value) == ("error[usage]: value_and_grad needs a loss: one of "
                               "cross_entropy, squared_error, absolute_error, logistic, hinge")
    loss, grads = net.value_and_grad(x, y, loss="squared_error")
    u = {p: rng.normal(size=a.shape) for p, a in net.params.items()}
    start = {p: a.copy() for p, a in net.params.items()}

    def at(t):
        for p, a in net.params.items():
            a[...] = start[p] + t * u[p]
        return net.value_and_grad(x, y, loss="squared_error")[0]

    assert sum(np.sum(grads[p] * u[p]) for p in u) == pytest.approx(
        _central(at, 0.0, 1.0), rel=1e-6)
    with pytest.raises(dp.Error) as info:
        net.value_and_grad(x, y[:, :2], loss="squared_error")
    assert info.value.message == ("Attend: (R^8)^4 -> (R^8)^4: squared_error takes real "
                                  "targets with shape (2, 4, 8), but they have shape "
                                  "(2, 2, 8) and dtype float64")


# -------------------------------------------------------------------------------- dp.Error
def test_a_shape_error_is_the_message_dp_check_prints(write_program):
    path = write_program("Net: R^4 -> R^2\nNet(x) = FeedForward(x; m = 3)\n")
    with pytest.raises(dp.Error) as info:
        dp.load(path)
    err = info.value
    assert (err.kind, err.file, err.line, err.col) == ("shape", path, 2, 10)
    assert err.message == "Net should give R^2 (its signature), but FeedForward(...) is R^3"
    code, out, printed = dp_here("check", path)
    assert code == 1 and str(err) == printed.rstrip("\n")
    assert isinstance(err, dp.Error) and err.exit_code == 1


def test_a_syntax_error_in_text_shows_its_source_line():
    with pytest.raises(dp.Error) as info:
        dp.loads("Net: R^4 -> R^2\nNet(x) = FeedForward(x;; m = 2)\n", "net.dp")
    err = info.value
    assert (err.kind, err.file, err.line) == ("syntax", "net.dp", 2)
    assert str(err).splitlines()[3] == " 2 | Net(x) = FeedForward(x;; m = 2)"


def test_inputs_of_the_wrong_shape_or_dtype_name_the_signature():
    net = dp.load(MLP).model(seed=0)
    cases = [
        (np.zeros(64), "shape", "Digits: R^64 -> R^10 takes the input with shape (batch, 64), "
                                "but it has shape (64,)"),
        (np.zeros((2, 63)), "shape", "Digits: R^64 -> R^10 takes the input with shape "
                                     "(batch, 64), but it has shape (2, 63)"),
        (np.array([["a"] * 64]), "type", "Digits: R^64 -> R^10 takes real numbers as the "
                                         "input, but it has dtype <U1"),
    ]
    for x, kind, message in cases:
        with pytest.raises(dp.Error) as info:
            net(x)
        assert (info.value.kind, info.value.message) == (kind, message)
    with pytest.raises(dp.Error) as info:
        net(np.zeros(64))
    assert info.value.notes == ("a single example needs the batch axis: x[None]",)
    with pytest.raises(dp.Error) as info:
        net(np.zeros((1, 64)), np.zeros((1, 64)))
    assert info.value.message == ("Digits: R^64 -> R^10 takes 1 input array(s), but 2 were "
                                  "given")
    assert net(np.zeros((1, 64), np.int32)).shape == (1, 10)  # integers are real numbers


def test_token_inputs_must_be_ids_in_the_vocabulary(vjp_program):
    net = vjp_program.model("Chars", seed=0)
    with pytest.raises(dp.Error) as info:
        net(np.zeros((1, 5)))
    assert info.value.message == ("Chars: Token[7]^5 -> Token[7]^5 takes token ids (integers) "
                                  "as the input, but it has dtype float64")
    with pytest.raises(dp.Error) as info:
        net(np.array([[0, 1, 7, 2, 3]]))
    assert info.value.message == ("Chars: Token[7]^5 -> Token[7]^5 takes token ids 0 to 6 as "
                                  "the input, but it holds 7 at index [0, 2]")
    out, pullback = net.vjp(np.array([[0, 1, 6, 2, 3]]))
    with pytest.raises(dp.Error) as info:
        pullback(np.ones((1, 5)))
    assert info.value.message == ("Chars: Token[7]^5 -> Token[7]^5: the cotangent must be real "
                                  "with the outputs' shape (1, 5, 7), but it has shape (1, 5) "
                                  "and dtype float64")


def test_a_model_that_reads_its_own_outputs_has_no_vjp():
    net = dp.load(ROOT / "programs" / "seq2seq_reverse.dp").model(seed=0)
    with pytest.raises(dp.Error) as info:
        net.vjp(np.zeros((1, 8), np.int64))
    assert info.value.kind == "usage" and "reads its own earlier outputs" in info.value.message
    loss, grads = net.value_and_grad(np.zeros((2, 8), np.int64), np.ones((2, 8), np.int64))
    assert np.isfinite(loss) and any(np.abs(g).sum() > 0 for g in grads.values())


def test_naming_a_module_that_is_not_there_or_has_open_sizes():
    prog = dp.load(MLP)
    with pytest.raises(dp.Error) as info:
        prog.model("Digit")
    assert str(info.value) == ("error[name]: no module named 'Digit' in "
                               f"{MLP} or the standard library\n"
                               "   = note: did you mean 'Digits'?")
    with pytest.raises(dp.Error) as info:
        prog.model("FeedForward")
    assert info.value.kind == "shape" and "open dimensions" in info.value.message
    with pytest.raises(dp.Error) as info:
        prog.model(dtype="float16")
    assert info.value.message == "dtype must be one of float32, float64, not 'float16'"
    assert prog.model(dtype=np.float64).dtype == np.float64


# ------------------------------------------------------------------------- weights by path
def test_a_mismatch_lists_every_missing_extra_and_misshapen_tensor(tmp_path):
    net = dp.load(MLP).model(seed=0)
    tensors = {p: a.copy() for p, a in net.params.items()}
    del tensors["Digits.feedforward2.b"]
    tensors["Digits.feedforward1.W"] = np.zeros((128, 63), np.float32)
    tensors["Digits.feedforward3.W"] = np.zeros((2, 2), np.float32)
    path = tmp_path / "w.safetensors"
    save_file(tensors, path)
    before = net(np.ones((1, 64)))
    with pytest.raises(dp.Error) as info:
        net.load_weights(path)
    err = info.value
    assert str(err) == "\n".join([
        f"error[weights]: the tensors of '{path}' do not match the parameters of Digits: "
        "1 missing, 1 extra, 1 misshapen",
        "   = note: missing: 'Digits.feedforward2.b' [10]",
        "   = note: extra: 'Digits.feedforward3.W' [2, 2]",
        "   = note: wrong shape: 'Digits.feedforward1.W' is [128, 63], Digits expects "
        "[128, 64]"])
    np.testing.assert_array_equal(net(np.ones((1, 64))), before)  # nothing was loaded


def test_not_strict_loads_what_matches_by_name():
    net = dp.load(MLP).model(seed=0)
    b = np.arange(10, dtype=np.float64)
    net.load_weights({"Digits.feedforward2.b": b, "other": np.zeros(3)}, strict=False)
    np.testing.assert_array_equal(net.params["Digits.feedforward2.b"], b)
    with pytest.raises(dp.Error) as info:
        net.load_weights({"Digits.feedforward2.b": np.zeros(3)}, strict=False)
    assert info.value.notes == ("wrong shape: 'Digits.feedforward2.b' is [3], Digits expects "
                                "[10]",)


def test_save_and_load_round_trip(tmp_path):
    prog = dp.load(MLP)
    net = prog.model(seed=1)
    path = tmp_path / "out.safetensors"
    net.save(path)
    tensors, meta = load_checkpoint(path)  # a dp checkpoint: checksum, format, the model
    assert meta["model"] == "Digits" and meta["signature"] == "R^64 -> R^10"
    other = prog.model(seed=2)
    x = np.random.default_rng(0).normal(size=(3, 64))
    assert not np.array_equal(other(x), net(x))
    other.load_weights(path)
    np.testing.assert_array_equal(other(x), net(x))
    wide = prog.model(weights=path, dtype="float64")  # float32 weights into float64
    np.testing.assert_allclose(wide(x), net(x), rtol=1e-5, atol=1e-5)


def test_weights_whose_header_length_starts_like_a_pickle(tmp_path):
    """A header of 0x480 bytes begins 80 04, as a pickle does; it is still safetensors."""
    net = dp.load(MLP).model(seed=0)
    tensors = {p: a.copy() for p, a in net.params.items()}
    path = tmp_path / "w.safetensors"
    for pad in range(1200):
        save_file(tensors, path, metadata={"pad": "x" * pad})
        if struct.unpack("<Q", path.read_bytes()[:8])[0] == 0x480:
            break
    assert path.read_bytes()[:2] == b"\x80\x04"
    net.load_weights(path)


def test_training_from_python(tmp_path):
    prog = dp.load(MLP)
    ckpt = tmp_path / "d.safetensors"
    net = prog.train(ckpt, steps=3, seed=5)
    tensors, meta = load_checkpoint(ckpt)
    assert meta["step"] == "3" and (tmp_path / "d.metrics.jsonl").exists()
    for p, a in net.params.items():
        np.testing.assert_array_equal(a, tensors[p])
    again = prog.train(tmp_path / "e.safetensors", steps=3, seed=5)  # the same run
    for p, a in again.params.items():
        np.testing.assert_array_equal(a, tensors[p])
    start = prog.model(seed=9)
    start.save(tmp_path / "start.safetensors")
    moved = prog.train(tmp_path / "f.safetensors", steps=1,
                       init_from=tmp_path / "start.safetensors")
    near = {p: np.abs(a - start.params[p]).max() for p, a in moved.params.items()}
    assert 0 < max(near.values()) < 0.5  # one step away from the given weights
    with pytest.raises(dp.Error) as info:
        prog.train(ckpt, epochs="two")
    assert info.value.message == "--set epochs=two: epochs must be a whole number"
    with pytest.raises(dp.Error) as info:
        dp.loads("Net: R^4 -> R^2\nNet(x) = FeedForward(x)\n").train()
    assert info.value.message == "<string> has no train block"


def test_import_dp_dsl_does_not_load_the_interpreter():
    """The API's names load on first use, so that the front end (and the `dp` command's
    start) do not pay for NumPy kernels they do not need."""
    code = ("import sys, dp.dsl; print('dp.interpreter.core.model' in sys.modules); "
            "import dp; dp.load; print('dp.interpreter.core.model' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]
    assert sorted(dp.__all__) == ["Error", "Net", "Program", "load", "loads"]
    with pytest.raises(AttributeError):
        dp.nothing  # noqa: B018


def test_export_onnx_writes_the_networks_graph(tmp_path, mlp_checkpoint):
    ort = pytest.importorskip("onnxruntime")
    net = dp.load(MLP).model(weights=mlp_checkpoint)
    net.export_onnx(tmp_path / "d.onnx")
    session = ort.InferenceSession(str(tmp_path / "d.onnx"))
    x = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(y, net(x), rtol=1e-5, atol=1e-5)


def test_value_and_grad_of_a_sign_loss_takes_labels_0_1_or_minus_1_1():
    """logistic on one score: the labels -1/1 and 0/1 give the same loss, softplus(-t s)."""
    prog = dp.loads("Score: R^2 -> R\nScore(h) = w h + b\n  param w: R^2 ~ glorot\n"
                    "  param b: R ~ zeros\n")
    net = prog.model("Score", seed=0, dtype="float64")
    x = np.array([[1.0, 2.0], [-1.0, 0.5], [0.3, -2.0]])
    s = net(x)
    loss, grads = net.value_and_grad(x, np.array([1, -1, 1]), loss="logistic")
    t = np.array([1.0, -1.0, 1.0])
    assert loss == pytest.approx(np.mean(np.log1p(np.exp(-t * s))), rel=1e-12)
    assert net.value_and_grad(x, np.array([1, 0, 1]), loss="logistic")[0] == loss
    assert set(grads) == {"Score.w", "Score.b"}
    with pytest.raises(dp.Error, match="logistic needs two classes"):
        net.value_and_grad(x, np.array([2, 0, 1]), loss="logistic")

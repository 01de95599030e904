"""ONNX export (interpreter/export/, `dp export`): every shipped program's model and a model of
each standard module, run by ONNX's reference evaluator and by onnxruntime at two batch sizes,
against dp's own forward."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from conftest import ROOT, dp_here
from dp.dsl import load_text
from dp.dsl.errors import DpError, Span, format_error
from dp.dsl.loader import load_programs
from dp.interpreter.core.lower import lower
from dp.interpreter.core.model import Model
from dp.interpreter.core.plan import Const, Plan
from dp.interpreter.core.primitives import PRIMITIVES
from dp.interpreter.data.text import Vocab
from dp.interpreter.export import onnx_export
from dp.interpreter.export.onnx_export import export_onnx, onnx_model
from dp.interpreter.export.onnx_ops import NOT_EXPORTED, OPSET, RULES
from onnx.reference import ReferenceEvaluator
from safetensors.numpy import load_file

try:
    import onnxruntime
except ImportError:  # the reference evaluator still runs every comparison
    onnxruntime = None

BATCHES = (1, 4)  # neither is a size the exporter lowers at (2 and 3): the batch is symbolic

SHIPPED = sorted((ROOT / "programs").glob("*.dp"))

# a small model of each standard module, and of the primitives they do not reach
MODULES = """
Acts: R^6 -> R^5
Acts(x) =
  a = gelu(x) + softplus(x) - sigmoid(x) * tanh(-x)
  b = sqrt(square(x) + 1) + log(abs(x) + 1) + exp(x / 4) / 2
  c = softmax(a) + log_softmax(b) * max(x) + normalize(x) - mean(x) + sum(b)
  FeedForward(dropout(FeedForward(c; m = 8, act = gelu); p = 0.5); act = identity)

Products: R^4 -> R^3
Products(x) = x @ (A @ C) + (x @ x) * (B x) + sum(A @ C)
  param A: R^(4, 3) ~ glorot
  param B: R^(3, 4) ~ glorot
  param C: R^(3, 3) ~ glorot

Vision: R^(2, 9, 9) -> R^3
Vision(x) =
  v = OverlapPool(StridedConv(x; c2 = 4, k = 3, s = 2, p = 1))
  w = MaxPool(Conv(v; c2 = 4, k = 1, act = sigmoid))
  FeedForward(flatten(w); act = identity)

Convs: R^(4, 7, 6) -> R^3
Convs(x) =
  a = conv2d(x, W, b; stride = 2, padding = 1, groups = 2)
  c = conv2d(a, W2, b2)
  FeedForward(flatten(avgpool2d(c; size = 2, stride = 1))) + FeedForward(global_avgpool2d(c))
  param W: R^(6, 2, 3, 2) ~ fan_in
  param b: R^6 ~ normal(1)
  param W2: R^(2, 6, 3, 1) ~ fan_in
  param b2: R^2 ~ normal(1)

Seq1d: (R^4)^6 -> (R^5)^2
Seq1d(xs) = conv1d(conv1d(xs, W, b), V, c; stride = 2, padding = 0)
  param W: R^(3, 4, 3) ~ fan_in
  param b: R^3 ~ normal(1)
  param V: R^(5, 3, 3) ~ fan_in
  param c: R^5 ~ normal(1)

Recurrent: (R^3)^5 -> R^4
Recurrent(xs) =
  hs = SequenceRNN(xs; cell = SimpleRNN, h = 6)
  FeedForward(Collapse(hs; over = seq_last); act = identity)

Gated: (R^3)^5 -> (R^4)^5
Gated(xs) = SequenceRNN(xs; cell = LSTM, h = 4)

MyCell: (R^h, R^d) -> R^h implements RNN
MyCell(h, x) = tanh(U h + V x + m)
  param U: R^(h, h) ~ fan_in
  param V: R^(h, d) ~ glorot
  carry m: R^h = 0.5 * m + 0.5 * tanh(V x)

Unrolled: (R^3)^5 -> R^4
Unrolled(xs) = Collapse(SequenceRNN(xs; cell = MyCell, h = 4); over = seq_max)

Norms: (R^8)^4 -> R^8
Norms(xs) = Collapse(map(LayerNorm, xs); over = seq_first)

Attend: (R^8)^4 -> (R^8)^4
Attend(xs) = SelfAttention(xs; heads = 2)

CausalAttend: (R^8)^4 -> (R^8)^4
CausalAttend(xs) = SelfAttention(xs; heads = 2, mask = causal)

Block: (R^8)^4 -> (R^8)^4
Block(xs) = TransformerBlock(xs; heads = 2, ff = 16)

PreBlock: (R^8)^4 -> (R^8)^4
PreBlock(xs) = PreNormBlock(xs; heads = 2, ff = 16, mask = causal)

Embeds: Token[9]^4 -> R^8
Embeds(ts) = Collapse(map(EmbedToken(; d = 8), ts))

CharLM: Token[9]^4 -> Token[9]^4
CharLM(ts) = LanguageModel(ts; body = SequenceRNN(; cell = LSTM, h = 3), d = 4)

Unfused: (R^8)^4 -> (R^8)^4
Unfused(xs) =
  q = split_heads(xs; h = 2)
  w = softmax(causal(q @ transpose(q) / 2))
  join_heads(w @ q + w @ w @ q)

Translate: Token[7]^5 -> Token[6]^4
Translate(ts) = SequenceToSequence(ts; d = 8, layers = 1, heads = 2, ff = 16)

Masked: R^5 -> R^5
Masked(x) = where(x > 0, log(x), 0) + where(x <= t, sqrt(t - x), x) + where(0 >= x, 1, -x)
  param t: R ~ ones
"""

NAMES = ["Acts", "Products", "Vision", "Convs", "Seq1d", "Recurrent", "Gated", "Unrolled",
         "Norms", "Attend", "CausalAttend", "Block", "PreBlock", "Embeds", "CharLM", "Unfused",
         "Translate", "Masked"]


@pytest.fixture(scope="module")
def modules():
    return load_text(MODULES)


def _model_of(path) -> tuple:
    """The program's model: the one its train block trains, else the first its run uses."""
    tprog, _ = load_programs([str(path)])
    if tprog.train is not None:
        return tprog, tprog.train.model
    return tprog, next(r.model for b in tprog.runs for p in b.prints for r in p.items
                       if r.model is not None)


def _inputs(model: Model, batch: int, rng) -> list[np.ndarray]:
    """Random inputs: token ids in their vocabulary, numbers from a normal distribution; and
    `previous` tokens when the model reads them."""
    xs = [rng.integers(0, t.vocab, (batch,) + s) if t.vocab is not None else
          rng.standard_normal((batch,) + s).astype(np.float32)
          for s, t in zip(model.arg_shapes, model.sig.args, strict=True)]
    if model.feedback:
        xs.append(rng.integers(0, model.out_shape[-1], (batch,) + model.out_shape[:-1]))
    return xs


def _dp_forward(model: Model, xs: list[np.ndarray]) -> np.ndarray:
    """dp's forward on exactly these inputs (with `previous` given, no decoding)."""
    if not model.feedback:
        return model.predict(*xs)
    ex = model._executable(len(xs[0]), None)
    return ex.outputs(ex.forward(*xs))[0]


def _runners(path) -> list:
    """Functions from the graph's input feed to its first output: the reference evaluator and,
    when it is installed, onnxruntime."""
    ref = ReferenceEvaluator(str(path))
    runners = [lambda feed: ref.run(None, feed)[0]]
    if onnxruntime is not None:
        sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        runners.append(lambda feed: sess.run(None, feed)[0])
    return runners


def _export_and_compare(tprog, name: str, tmp_path) -> onnx.ModelProto:
    model = Model(tprog, name)
    model.init(0)
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, str(path))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    names = [i.name for i in proto.graph.input]
    rng = np.random.default_rng(1)
    runners = _runners(path)
    for batch in BATCHES:
        xs = _inputs(model, batch, rng)
        want = _dp_forward(model, xs)
        for run in runners:
            got = run(dict(zip(names, xs, strict=True)))
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=name)
    return proto


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_program_exports_and_computes_what_dp_computes(path, tmp_path):
    tprog, name = _model_of(path)
    proto = _export_and_compare(tprog, name, tmp_path)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("name", NAMES)
def test_every_standard_module_exports_and_computes_what_dp_computes(name, modules, tmp_path):
    _export_and_compare(modules, name, tmp_path)


def test_the_modules_reach_every_rule(modules):
    """The models above exercise every primitive the exporter knows, but three that no
    builtin lowers to and relu, which fuse.py folds into the linear or conv2d before it
    (tested on a plan of their own below)."""
    seen = {e.prim for name in NAMES for e in lower(modules, name, 2).eqns}
    assert set(RULES) - seen == {"identity", "maximum", "minimum", "relu"}


def test_every_primitive_exports_or_is_a_loss():
    """A new primitive needs a rule in onnx_ops.py (or a reason not to)."""
    assert set(RULES) | set(NOT_EXPORTED) == set(PRIMITIVES)
    assert not set(RULES) & set(NOT_EXPORTED)


def _plan(batch: int, prim: str, span=None) -> Plan:
    p = Plan()
    x = p.new_var((batch, 8), True)
    p.inputs.append(x)
    y = p.add("relu", (p.add("maximum", (x, Const(0.5))),))
    z = p.add("identity", (p.add("minimum", (y, Const(1.0))),))
    p.outputs.append(p.add(prim, (z,), span) if prim else z)
    return p


def test_the_primitives_no_builtin_reaches_export(modules, tmp_path):
    model = Model(modules, "Embeds")  # one input: the plans below take its name, ts
    proto = onnx_model(onnx, model, _plan(2, None), _plan(3, None))
    onnx.checker.check_model(proto)
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    for run in _runners(path):
        np.testing.assert_array_equal(run({"ts": x}), np.minimum(np.maximum(x, 0.5), 1.0))


def test_a_primitive_with_no_onnx_form_is_an_export_error_at_its_line(modules, write_program):
    path = write_program("Net: R^8 -> R\nNet(x) = sum(x)\n")
    span = Span(path, 2, 10, 2, 16)
    model = Model(modules, "Embeds")
    with pytest.raises(DpError) as err:
        onnx_model(onnx, model, _plan(2, "batch_mean", span), _plan(3, "batch_mean", span))
    assert format_error(err.value) == (
        "error[export]: batch_mean cannot be exported to ONNX\n"
        f"  --> {path}:2:10\n"
        "   |\n"
        " 2 | Net(x) = sum(x)\n"
        "   |          ^^^^^^\n"
        "   = note: docs/export.md lists what exports")


def test_parameters_are_initializers_named_by_path_and_the_opset_is_17(tmp_path):
    tprog, _ = load_programs([str(ROOT / "programs" / "digits_mlp.dp")])
    model = Model(tprog, "Digits")
    model.init(3)
    export_onnx(model, str(tmp_path / "d.onnx"))
    proto = onnx.load(str(tmp_path / "d.onnx"))
    params = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer
              if not i.name.startswith("/")}
    assert sorted(params) == ["Digits.feedforward1.W", "Digits.feedforward1.b",
                              "Digits.feedforward2.W", "Digits.feedforward2.b"]
    for path, value in params.items():
        np.testing.assert_array_equal(value, model.params[path])
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    assert OPSET >= 17
    assert {n.op_type for n in proto.graph.node} == {"Gemm", "Relu", "Identity"}


def test_a_text_model_carries_its_vocabulary(modules, tmp_path):
    """The characters the token ids stand for, as the checkpoint stores them."""
    model = Model(modules, "Embeds")
    model.init(0)
    model.vocab = Vocab.of("a bad cafe, a bag")  # 9 characters: Token[9]
    export_onnx(model, str(tmp_path / "e.onnx"))
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "e.onnx")).metadata_props}
    assert props == {"dp.vocab": '[" ", ",", "a", "b", "c", "d", "e", "f", "g"]'}


def test_a_large_model_keeps_its_parameters_in_a_file_beside_the_graph(monkeypatch, tmp_path):
    """Past EXTERNAL_DATA_BYTES (one protobuf file holds at most 2 GB) the parameters go to
    OUT.data, which runtimes read from beside the graph."""
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    tprog, _ = load_programs([str(ROOT / "programs" / "digits_cnn.dp")])
    model = Model(tprog, "DigitsCNN")
    model.init(0)
    path = tmp_path / "cnn.onnx"
    export_onnx(model, str(path))
    largest = 4 * max(v.size for v in model.params.values())  # small ones stay in the graph
    assert (tmp_path / "cnn.onnx.data").stat().st_size >= largest
    assert path.stat().st_size < largest
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    for run in _runners(path):
        np.testing.assert_allclose(run({"x": x}), model.predict(x), rtol=0, atol=1e-5)


def test_a_decoder_exported_with_previous_decodes_as_dp_does(modules, tmp_path):
    """`previous` is the graph's second input; feeding back the most likely tokens, one
    position at a time, gives what Model.predict gives."""
    model = Model(modules, "Translate")
    model.init(0)
    path = tmp_path / "t.onnx"
    export_onnx(model, str(path))
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["ts", "previous"]
    ts = np.random.default_rng(2).integers(0, 7, (3, 5))
    for run in _runners(path):
        prev = np.zeros((3, 4), np.int64)
        for t in range(4):
            scores = run({"ts": ts, "previous": prev})
            if t + 1 < 4:
                prev[:, t + 1] = scores[:, t].argmax(axis=-1)
        np.testing.assert_allclose(scores, model.predict(ts), rtol=0, atol=1e-5)


def test_without_onnx_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    code, out, err = dp_here("export", ROOT / "programs" / "digits_mlp.dp", "Digits",
                             "-o", tmp_path / "d.onnx")
    assert (code, out) == (1, "")
    assert err == ("error[export]: exporting to ONNX needs the onnx package, which is not "
                   "installed\n   = note: install it with: pip install 'dp[onnx]'\n")
    assert not (tmp_path / "d.onnx").exists()


def test_dp_export_writes_the_trained_model(tmp_path):
    program = tmp_path / "digits_mlp.dp"
    program.write_text((ROOT / "programs" / "digits_mlp.dp").read_text())
    assert dp_here("train", program, "--steps", "2")[0] == 0
    out = tmp_path / "digits.onnx"
    code, stdout, err = dp_here("export", program, "Digits", "-o", out)
    assert (code, err) == (0, "")
    ckpt = program.with_suffix(".safetensors")
    assert stdout == f"wrote {out}: Digits with the parameters of {ckpt}\n"
    trained = load_file(str(ckpt))
    proto = onnx.load(str(out))
    for init in proto.graph.initializer:
        if not init.name.startswith("/"):
            np.testing.assert_array_equal(onnx.numpy_helper.to_array(init), trained[init.name])


def test_dp_export_of_an_untrained_module_uses_the_seed(tmp_path, write_program):
    program = write_program(MODULES)
    code, stdout, err = dp_here("export", program, "Recurrent", "--seed", "4", cwd=tmp_path)
    assert (code, err) == (0, "")
    assert stdout == ("wrote Recurrent.onnx: Recurrent with parameters initialized with seed 4 "
                      "(not trained)\n")
    model = Model(load_text(MODULES), "Recurrent")
    model.init(4)
    proto = onnx.load(str(tmp_path / "Recurrent.onnx"))
    values = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    for path, value in model.params.items():
        np.testing.assert_array_equal(values[path], value)


ROWS = """
Rows: (R^8)^8 -> R^10
Rows(rows; cell: RNN = SimpleRNN) =
  FeedForward(Collapse(SequenceRNN(rows; cell = cell, h = 4); over = seq_last); act = identity)

train Rows on digits(split = train):
  loss cross_entropy; optimizer adam(lr = 0.01); batch 32; steps 2
"""


def test_dp_export_chooses_the_configuration_the_model_was_trained_with(tmp_path,
                                                                         write_program):
    program = write_program(ROWS)
    assert dp_here("train", program, "--set", "cell=LSTM", cwd=tmp_path)[0] == 0
    code, stdout, err = dp_here("export", program, "Rows", "--set", "cell=LSTM",
                                "-o", tmp_path / "rows.onnx")
    assert (code, err) == (0, "")
    proto = onnx.load(str(tmp_path / "rows.onnx"))
    (scan,) = [n for n in proto.graph.node if n.op_type == "Scan"]
    assert "Split" in {n.op_type for n in scan.attribute[0].g.node}  # the LSTM's gates
    trained = load_file(str(tmp_path / "prog.safetensors"))
    for init in proto.graph.initializer:
        if not init.name.startswith("/"):
            np.testing.assert_array_equal(onnx.numpy_helper.to_array(init), trained[init.name])
    code, _, err = dp_here("export", program, "Rows", "-o", tmp_path / "other.onnx")
    assert code == 1
    assert err.startswith(f"error[checkpoint]: checkpoint '{tmp_path / 'prog.safetensors'}' "
                          "has no parameter 'Rows.sequencernn.cell.U'")
    assert "= note: a model trained with --set cell=... runs with the same --set\n" in err


@pytest.mark.parametrize("args, code, message", [
    (["export", "programs/digits_mlp.dp"], 2,
     "error[usage]: the following arguments are required: module (see `dp --help`)\n"),
    (["export", "programs/digits_mlp.dp", "Digits", "--seed", "x"], 2,
     "error[usage]: argument --seed: invalid int value: 'x' (see `dp --help`)\n"),
    (["export", "programs/digits_mlp.dp", "Digitz"], 1,
     "error[name]: no module 'Digitz' is defined in programs/digits_mlp.dp or the standard "
     "library\n   = note: did you mean 'Digits'?\n"),
    (["export", "programs/digits_mlp.dp", "FeedForward"], 1,
     "error[shape]: FeedForward: R^n -> R^m has open dimensions; a model to train or run "
     "needs concrete sizes\n   = note: write a module with a concrete signature that uses "
     "FeedForward\n"),
    (["export", "programs/digits_mlp.dp", "Digits", "-o", "no/such/dir/d.onnx"], 1,
     "error[file]: cannot write no/such/dir/d.onnx: No such file or directory\n"),
])
def test_dp_export_errors(args, code, message):
    assert dp_here(*args, cwd=ROOT) == (code, "", message)

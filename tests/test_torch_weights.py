"""Weights PyTorch wrote, in dp: nn.TransformerEncoderLayer (post-norm, pre-norm, gelu,
causal) renamed by the recipe of docs/pytorch.md (its code is run here, so the page cannot
drift) into TransformerBlock, PreNormBlock and the page's gelu block. Outputs match PyTorch's
within 1e-5, gradients (input and every parameter, for PyTorch's cotangent) within 1e-4. The
fixture is written by tests/fixtures/torch_blocks.py; torch is not needed here."""

from __future__ import annotations

import re

import dp
import numpy as np
import pytest
from conftest import ROOT
from safetensors.numpy import load_file, save_file

FIXTURE = load_file(ROOT / "tests" / "fixtures" / "torch_blocks.safetensors")
PAGE = (ROOT / "docs" / "pytorch.md").read_text()


def _block(marker: str) -> str:
    """The code block of docs/pytorch.md that contains `marker`."""
    parts = re.split(r"^```.*\n", PAGE, flags=re.M)  # text, code, text, code, ...
    (found,) = [code for code in parts[1::2] if marker in code]
    return found


RECIPE: dict = {}
exec(_block("def encoder_layer_to_dp"), RECIPE)  # noqa: S102 -- the page's code
encoder_layer_to_dp = RECIPE["encoder_layer_to_dp"]

PROGRAM = _block("GeluBlock(xs;") + """
Post: (R^8)^5 -> (R^8)^5
Post(xs) = TransformerBlock(xs; heads = 2, ff = 16)

Pre: (R^8)^5 -> (R^8)^5
Pre(xs) = PreNormBlock(xs; heads = 2, ff = 16)

Gelu: (R^8)^5 -> (R^8)^5
Gelu(xs) = GeluBlock(xs; heads = 2, ff = 16)

Causal: (R^8)^5 -> (R^8)^5
Causal(xs) = TransformerBlock(xs; heads = 2, ff = 16, mask = causal)
"""
CASES = [("post", "Post", "Post.transformerblock.addnorm"),
         ("pre", "Pre", "Pre.prenormblock.prenorm"),
         ("gelu", "Gelu", "Gelu.gelublock.prenorm"),
         ("causal", "Causal", "Causal.transformerblock.addnorm")]


def _torch(case: str, kind: str) -> dict[str, np.ndarray]:
    """The fixture's `case.kind.NAME` tensors by PyTorch's NAME."""
    prefix = f"{case}.{kind}."
    return {k[len(prefix):]: v for k, v in FIXTURE.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def program():
    return dp.loads(PROGRAM, "torch_blocks.dp")


@pytest.mark.parametrize("case,module,block", CASES)
def test_pytorch_weights_give_pytorchs_outputs(program, tmp_path, case, module, block):
    """The renamed weights go through a safetensors file, as a user would move them."""
    path = tmp_path / f"{case}.safetensors"
    save_file(encoder_layer_to_dp(_torch(case, "weights"), block), path)
    net = program.model(module)
    net.load_weights(path)
    out = net(FIXTURE[f"{case}.x"])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, FIXTURE[f"{case}.out"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("case,module,block", CASES)
def test_gradients_match_pytorchs(program, case, module, block):
    net = program.model(module, weights=encoder_layer_to_dp(_torch(case, "weights"), block))
    out, pullback = net.vjp(FIXTURE[f"{case}.x"])
    np.testing.assert_allclose(out, FIXTURE[f"{case}.out"], rtol=0, atol=1e-5)
    dx, dparams = pullback(FIXTURE[f"{case}.cotangent"])
    np.testing.assert_allclose(dx, FIXTURE[f"{case}.dx"], rtol=0, atol=1e-4)
    expected = encoder_layer_to_dp(_torch(case, "grads"), block)  # the renaming is linear
    assert dparams.keys() == expected.keys() == net.params.keys()
    for path, g in expected.items():
        np.testing.assert_allclose(dparams[path], g, rtol=0, atol=1e-4, err_msg=path)


def test_pytorchs_own_names_are_refused_with_every_one_listed(program, tmp_path):
    """The file as PyTorch saved it, not renamed: one error names all 16 parameters dp
    wants and all 12 tensors it found, and says how the names differ."""
    path = tmp_path / "layer.safetensors"
    save_file(_torch("post", "weights"), path)
    net = program.model("Post")
    before = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(dp.Error) as info:
        net.load_weights(path)
    err = info.value
    assert err.kind == "weights" and err.file is None
    assert err.message == (f"the tensors of '{path}' do not match the parameters of Post: "
                           "16 missing, 12 extra")
    assert "missing: 'Post.transformerblock.addnorm1.f.attention.linear1.W' [8, 8]" in err.notes
    assert "extra: 'self_attn.in_proj_weight' [24, 8]" in err.notes
    assert err.notes[-1].startswith("the parameters are named like 'Post.transformerblock.")
    assert all(np.array_equal(before[k], v) for k, v in net.params.items())  # unchanged

"""Stage 3, last step: rewrite chains of primitives in the plan as the fused kernels that pay.

- `softmax(causal_mask(s))` -> `causal_softmax(s)`. The causal mask exists only here: it is
  not a primitive of its own (masked scores are -inf, which no later op but softmax takes
  well), so a `causal(...)` that does not go straight into softmax is an error.
- `add(linear(x, W), b)` with b a parameter vector -> `linear(x, W, b)` (`W x + b`).
- `relu(linear(...))` -> `linear(...; relu)` (FeedForward's `relu(W x + b)`): one pass less
  each way, and no pre-activation kept.
- `add(mul(layernorm(x), g), b)` with g, b parameter vectors -> `layernorm(x, g, b)`
  (LayerNorm's `g * normalize(x) + b`).
- Attention as the language writes it, `softmax(causal?(q @ transpose(k) / c)) @ v`, ->
  `attention(q, k, v; scale = 1 / c, causal)`: one primitive that keeps only the weights for
  its backward, instead of five that keep every intermediate.
- `join_heads(attention(split_heads(q), split_heads(k), split_heads(v)))` (the reshapes to
  [..., n, H, e] and the transposes to [..., H, n, e], and back) -> `attention(q, k, v;
  heads = H)`, which reads the heads in place: no copies of q, k, v or out, nor of their
  gradients.

A chain is fused only when each of its intermediate values has no other use.
"""

from __future__ import annotations

from collections import Counter

from dp.dsl.errors import DpError

from .plan import Const, Eqn, Plan, Var


def fuse(plan: Plan) -> None:
    _Fuser(plan).run()
    for e in plan.eqns:
        if e.prim == "causal_mask":
            raise DpError("type", "causal(...) masks scores for a softmax: write "
                          "softmax(causal(scores))", e.span)


class _Fuser:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.uses = Counter(a.id for e in plan.eqns for a in e.inputs if isinstance(a, Var))
        self.uses.update(v.id for v in plan.outputs)
        self.made = {e.out.id: e for e in plan.eqns}
        self.dropped: set[int] = set()

    def run(self) -> None:
        eqns = self.plan.eqns
        for i, e in enumerate(eqns):
            if e.prim == "softmax":
                mask = self._only(e.inputs[0], "causal_mask")
                if mask is not None:
                    eqns[i] = self.made[e.out.id] = Eqn("causal_softmax", mask.inputs, (),
                                                         e.out, e.span)
                    self.dropped.add(id(mask))
        for i, e in enumerate(eqns):
            if e.prim == "add" and all(isinstance(a, Var) for a in e.inputs):
                eqns[i] = self.made[e.out.id] = self._bias(e) or e
        for i, e in enumerate(eqns):
            lin = self._only(e.inputs[0], "linear") if e.prim == "relu" else None
            if lin is not None and not dict(lin.params).get("relu"):
                self.dropped.add(id(lin))
                eqns[i] = self.made[e.out.id] = Eqn(
                    "linear", lin.inputs, tuple(sorted(lin.params + (("relu", True),))), e.out,
                    e.span)
        for i, e in enumerate(eqns):
            if e.prim == "matmul":
                fused = self._attention(e)
                if fused is not None:
                    eqns[i] = self.made[e.out.id] = fused
        for i, e in enumerate(eqns):
            if e.prim == "reshape":
                fused = self._heads(e)
                if fused is not None:
                    eqns[i] = self.made[e.out.id] = fused
        eqns[:] = [e for e in eqns if id(e) not in self.dropped]

    def _only(self, x, prim: str) -> Eqn | None:
        """The equation that made x, if it is a `prim` and x has no other use."""
        e = self.made.get(x.id) if isinstance(x, Var) else None
        return e if e is not None and e.prim == prim and self.uses[x.id] == 1 else None

    def _bias(self, e: Eqn) -> Eqn | None:
        x, b = e.inputs
        if not (x.batched and len(x.shape) >= 2 and not b.batched and b.shape == x.shape[-1:]):
            return None
        lin = self._only(x, "linear")
        if lin is not None and len(lin.inputs) == 2:
            self.dropped.add(id(lin))
            return Eqn("linear", lin.inputs + (b,), (), e.out, e.span)
        mul = self._only(x, "mul")
        norm = g = None
        for a, other in ((0, 1), (1, 0)) if mul is not None else ():
            norm, g = self._only(mul.inputs[a], "layernorm"), mul.inputs[other]
            if norm is not None:
                break
        if (norm is not None and len(norm.inputs) == 1 and isinstance(g, Var)
                and not g.batched and g.shape == b.shape):
            self.dropped.update((id(mul), id(norm)))
            return Eqn("layernorm", norm.inputs + (g, b), norm.params, e.out, e.span)
        return None

    def _attention(self, e: Eqn) -> Eqn | None:
        weights, v = e.inputs
        soft = self._only(weights, "softmax") or self._only(weights, "causal_softmax")
        if soft is None or not isinstance(v, Var) or len(v.shape) < 3:
            return None
        scaled = soft.inputs[0]
        scale = 1.0
        div = self._only(scaled, "div") or self._only(scaled, "mul")
        if div is not None and isinstance(div.inputs[1], Const):
            c = div.inputs[1].value
            scale, scaled = (1.0 / c if div.prim == "div" else c), div.inputs[0]
        else:
            div = None
        product = self._only(scaled, "matmul")
        if product is None:
            return None
        q, kt = product.inputs
        tr = self._only(kt, "transpose")
        n = len(v.shape)
        swap = tuple(range(n - 2)) + (n - 1, n - 2)
        if (tr is None or dict(tr.params)["axes"] != swap or not isinstance(q, Var)
                or q.shape[:-2] != v.shape[:-2] or tr.inputs[0].shape[:-1] != v.shape[:-1]):
            return None
        self.dropped.update(id(x) for x in (soft, div, product, tr) if x is not None)
        return Eqn("attention", (q, tr.inputs[0], v),
                   (("causal", soft.prim == "causal_softmax"), ("scale", scale)), e.out, e.span)

    def _heads(self, e: Eqn) -> Eqn | None:
        """e = reshape(transpose(attention(...))) joining the heads: the fused attention, if
        each of q, k, v is a split of the same number of heads (see the module docstring)."""
        tr = self._only(e.inputs[0], "transpose")
        att = self._only(tr.inputs[0], "attention") if tr is not None else None
        if att is None or dict(att.params).get("heads", 1) != 1:
            return None
        r = len(tr.out.shape)
        swap = tuple(range(r - 3)) + (r - 2, r - 3, r - 1)
        heads = tr.out.shape[-2]
        if (dict(tr.params)["axes"] != swap or e.out.shape != tr.out.shape[:-2]
                + (heads * tr.out.shape[-1],)):
            return None
        chain, sources = [att, tr], []
        for x in att.inputs:
            split = self._only(x, "transpose")
            shaped = self._only(split.inputs[0], "reshape") if split is not None else None
            if shaped is None or dict(split.params)["axes"] != swap:
                return None
            src, (*_, h, width) = shaped.inputs[0], shaped.out.shape[-2:]
            if not isinstance(src, Var) or h != heads or src.shape != shaped.out.shape[:-2] + (
                    heads * width,):
                return None
            chain += [split, shaped]
            sources.append(src)
        self.dropped.update(id(x) for x in chain)
        params = tuple(sorted(att.params + (("heads", heads),)))
        return Eqn("attention", tuple(sources), params, e.out, att.span)

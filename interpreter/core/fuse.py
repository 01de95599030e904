"""Stage 3, last step: rewrite chains of primitives in the plan as the fused kernels that pay.

- `add(linear(x, W), b)` with b a parameter vector -> `linear(x, W, b)` (`W x + b`).
- `relu(linear(...))` -> `linear(...; relu)` (FeedForward's `relu(W x + b)`), and likewise
  `relu(conv2d(...))` -> `conv2d(...; relu)` (Conv's): one pass less each way, and no
  pre-activation kept.
- `add(mul(layernorm(x), g), b)` with g, b parameter vectors -> `layernorm(x, g, b)`
  (LayerNorm's `g * normalize(x) + b`).
- Attention as the language writes it, `softmax(causal?(q @ transpose(k) / c)) @ v` (lowering
  makes `softmax(causal(s))` the primitive `causal_softmax(s)`), -> `attention(q, k, v;
  scale = 1 / c, causal)`: one primitive that keeps only the weights for its backward,
  instead of five that keep every intermediate.
- `join_heads(attention(split_heads(q; heads = H), split_heads(k; heads = H),
  split_heads(v; heads = H)); heads = H)` -> `attention(q, k, v; heads = H)`, which reads the
  heads in place: no copies of q, k, v or out, nor of their gradients.
- `linear(embed(ids, E), W, b)`, with the reshapes lowering puts between them, ->
  `embed_linear(ids, E, W, b)`: a language model's embedding and its first projection, which
  the primitive can compute once on the table's rows instead of once per token.

A chain is fused only when each of its intermediate values has no other use. The plan is
re-checked after each kind of rewrite when plan.CHECK_PLANS is on.
"""

from __future__ import annotations

from collections import Counter

from .plan import Const, Eqn, Plan, PlanError, Var, check_plan, rule_shape


def fuse(plan: Plan) -> None:
    _Fuser(plan).run()
    check_plan(plan)


class _Fuser:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.uses = Counter(a.id for e in plan.eqns for a in e.inputs if isinstance(a, Var))
        self.uses.update(v.id for v in plan.outputs)
        self.made = {e.out.id: e for e in plan.eqns}
        self.dropped: set[int] = set()

    def run(self) -> None:
        for prim, rule in (("add", self._bias), ("relu", self._relu),
                           ("matmul", self._attention), ("join_heads", self._heads),
                           ("linear", self._embed_linear)):
            rewritten = False
            for i, e in enumerate(self.plan.eqns):
                fused = rule(e) if e.prim == prim and id(e) not in self.dropped else None
                if fused is not None:
                    self._replace(i, fused)
                    rewritten = True
            if rewritten:
                check_plan(self.plan)
        self.plan.eqns[:] = [e for e in self.plan.eqns if id(e) not in self.dropped]

    def _replace(self, i: int, fused: Eqn) -> None:
        """Equation i becomes `fused`, which must give the same value (checked by the rule)."""
        if rule_shape(fused.prim, fused.inputs, dict(fused.params), fused.span) != fused.out.shape:
            raise PlanError(f"fusing into {fused.prim} changed the shape of {fused.out}")
        self.plan.eqns[i] = self.made[fused.out.id] = fused

    def _relu(self, e: Eqn) -> Eqn | None:
        lin = self._only(e.inputs[0], "linear") or self._only(e.inputs[0], "conv2d")
        if lin is None or dict(lin.params).get("relu"):
            return None
        self.dropped.add(id(lin))
        return Eqn(lin.prim, lin.inputs, tuple(sorted(lin.params + (("relu", True),))), e.out,
                   e.span)

    def _only(self, x, prim: str) -> Eqn | None:
        """The equation that made x, if it is a `prim` and x has no other use."""
        e = self.made.get(x.id) if isinstance(x, Var) else None
        return e if e is not None and e.prim == prim and self.uses[x.id] == 1 else None

    def _bias(self, e: Eqn) -> Eqn | None:
        x, b = e.inputs
        if not (isinstance(x, Var) and isinstance(b, Var) and x.batched and len(x.shape) >= 2
                and not b.batched and b.shape == x.shape[-1:]):
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
        """e = join_heads(attention(...); heads = H): the fused attention, if each of q, k, v
        is a split_heads into the same H heads (see the module docstring)."""
        heads = dict(e.params)["heads"]
        att = self._only(e.inputs[0], "attention")
        if att is None or dict(att.params).get("heads", 1) != 1:
            return None
        splits = [self._only(x, "split_heads") for x in att.inputs]
        if any(s is None or dict(s.params)["heads"] != heads or not isinstance(s.inputs[0], Var)
               for s in splits):
            return None
        self.dropped.update(id(x) for x in [att] + splits)
        params = tuple(sorted(att.params + (("heads", heads),)))
        return Eqn("attention", tuple(s.inputs[0] for s in splits), params, e.out, att.span)

    def _embed_linear(self, e: Eqn) -> Eqn | None:
        """e = linear(x, W, b?) with x = embed(ids, E), maybe reshaped: embed_linear on ids
        shaped as e's rows (the ids' own reshape undone when lowering made one)."""
        if dict(e.params).get("relu"):
            return None
        x = e.inputs[0]
        between = self._only(x, "reshape")
        emb = self._only(between.inputs[0] if between else x, "embed")
        if emb is None:
            return None
        ids, rows = emb.inputs[0], e.out.shape[:-1]
        source = self.made.get(ids.id)
        if ids.shape != rows and source is not None and source.prim == "reshape" \
                and source.inputs[0].shape == rows:
            if self.uses[ids.id] == 1:
                self.dropped.add(id(source))
            else:
                self.uses[source.inputs[0].id] += 1
            ids = source.inputs[0]
        if ids.shape != rows:
            return None
        self.dropped.update(id(q) for q in (emb, between) if q is not None)
        return Eqn("embed_linear", (ids,) + emb.inputs[1:] + e.inputs[1:], (), e.out, e.span)

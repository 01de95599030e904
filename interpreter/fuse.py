"""Stage 3, last step: rewrite chains of primitives in the plan as the fused kernels that pay.

- `softmax(causal_mask(s))` -> `causal_softmax(s)`. The causal mask exists only here: it is
  not a primitive of its own (masked scores are -inf, which no later op but softmax takes
  well), so a `causal(...)` that does not go straight into softmax is an error.
"""

from __future__ import annotations

from collections import Counter

from dp.dsl.errors import DpError

from .plan import Eqn, Plan, Var


def fuse(plan: Plan) -> None:
    uses = Counter(a.id for e in plan.eqns for a in e.inputs if isinstance(a, Var))
    uses.update(v.id for v in plan.outputs)
    made = {e.out.id: e for e in plan.eqns}
    dropped = set()
    for i, e in enumerate(plan.eqns):
        x = e.inputs[0] if e.inputs else None
        source = made.get(x.id) if isinstance(x, Var) else None
        if (e.prim == "softmax" and source is not None and source.prim == "causal_mask"
                and uses[x.id] == 1):
            plan.eqns[i] = Eqn("causal_softmax", source.inputs, (), e.out, e.span)
            dropped.add(id(source))
    plan.eqns[:] = [e for e in plan.eqns if id(e) not in dropped]
    for e in plan.eqns:
        if e.prim == "causal_mask":
            raise DpError("type", "causal(...) masks scores for a softmax: write "
                          "softmax(causal(scores))", e.span)

"""`dp plot RUN...`: the loss curves of one or more runs, from their metrics files, to a PNG.

A RUN is a program (its checkpoint's metrics), a checkpoint or a metrics file. The training
loss is drawn per step (faint) with its epoch means (solid); held-out loss and accuracy,
when the run has an `eval` setting, per epoch, with the best held-out loss marked; the
learning rate of every step when it changes during a run (a warmup or a schedule). Several
runs share the axes to compare.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dp.dsl.errors import DpError
from dp.interpreter.training.metrics import metrics_path, read_records


@dataclass
class Curves:
    name: str
    unit: str = "epoch"  # text runs report every tenth of their steps instead
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    epoch_steps: list[int] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    accuracy_steps: list[int] = field(default_factory=list)  # a regression run has none
    accuracies: list[float] = field(default_factory=list)
    lr_steps: list[int] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    best: tuple[int, float] | None = None  # the step and held-out loss of the best evaluation

    def rate_varies(self) -> bool:
        return len(set(self.lrs)) > 1


def curves(records: list[dict], name: str) -> Curves:
    c = Curves(name)
    for r in records:
        if r.get("kind") == "run":
            c.unit = r.get("unit", "epoch")
        elif r.get("kind") == "step":
            c.steps.append(r["step"])
            c.losses.append(r["loss"])
            if "lr" in r:
                c.lr_steps.append(r["step"])
                c.lrs.append(r["lr"])
        elif r.get("kind") in ("epoch", "period"):
            c.epoch_steps.append(r["step"])
            c.epoch_losses.append(r["loss"])
            if "eval_loss" in r:
                c.eval_steps.append(r["step"])
                c.eval_losses.append(r["eval_loss"])
                if r.get("best"):
                    c.best = (r["step"], r["eval_loss"])
            if "eval_accuracy" in r:
                c.accuracy_steps.append(r["step"])
                c.accuracies.append(r["eval_accuracy"])
    return c


def metrics_file(run: str) -> str:
    """The metrics file a RUN names."""
    if run.endswith(".jsonl"):
        return run
    if run.endswith(".dp"):
        from dp.dsl.loader import load_programs
        from dp.interpreter.training.train import checkpoint_path

        tprog, _ = load_programs([run])
        if tprog.train is None:
            raise DpError("usage", f"{run} has no train block, so it has no runs to plot")
        return metrics_path(checkpoint_path(run, None, tprog.train))
    return metrics_path(run)


def plot_cmd(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [metrics_file(r) for r in args.runs]
    runs = [curves(read_records(p), _name(p)) for p in paths]
    for p, c in zip(paths, runs):
        if not c.steps:
            raise DpError("data", f"the metrics file '{p}' has no training steps yet")
    out = args.output or _name(paths[0], keep_folder=True) + ".loss.png"
    if not out.lower().endswith(".png"):
        raise DpError("usage", f"dp plot writes a PNG: the output must end in .png, not "
                      f"'{os.path.basename(out)}'")
    evals = any(c.accuracies for c in runs)
    rates = any(c.rate_varies() for c in runs)
    panels = 1 + evals + rates
    fig, axes = plt.subplots(1, panels, figsize=(7 if panels == 1 else 5.5 * panels, 4.2),
                             squeeze=False)
    loss_ax = axes[0][0]
    for i, c in enumerate(runs):
        color = f"C{i}"
        label = c.name if len(runs) > 1 else "training"
        loss_ax.plot(c.steps, c.losses, color=color, alpha=0.25, linewidth=0.8)
        loss_ax.plot(c.epoch_steps, c.epoch_losses, color=color, marker="o", markersize=3,
                     label=f"{label} (mean per {'epoch' if c.unit == 'epoch' else 'tenth'})")
        if c.eval_losses:
            loss_ax.plot(c.eval_steps, c.eval_losses, color=color, linestyle="--",
                         marker="s", markersize=3, label=f"{c.name if len(runs) > 1 else ''}"
                         f"{' ' if len(runs) > 1 else ''}held-out")
        if c.best is not None:
            loss_ax.plot(*c.best, color=color, marker="*", markersize=12, linestyle="none",
                         label="best held-out" if i == 0 else None)
    loss_ax.set(xlabel="step", ylabel="loss", title="loss")
    if max(max(c.losses) for c in runs) > 10 * min(min(c.losses) for c in runs):
        loss_ax.set_yscale("log")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)
    if evals:
        acc_ax = axes[0][1]
        for i, c in enumerate(runs):
            if c.accuracies:
                acc_ax.plot(c.accuracy_steps, c.accuracies, color=f"C{i}", marker="s",
                            markersize=3, label=c.name)
        acc_ax.set(xlabel="step", ylabel="accuracy", title="held-out accuracy")
        acc_ax.grid(alpha=0.3)
        if len(runs) > 1:
            acc_ax.legend(fontsize=8)
    if rates:
        lr_ax = axes[0][panels - 1]
        for i, c in enumerate(runs):
            if c.lrs:
                lr_ax.plot(c.lr_steps, c.lrs, color=f"C{i}", label=c.name)
        lr_ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
        lr_ax.grid(alpha=0.3)
        if len(runs) > 1:
            lr_ax.legend(fontsize=8)
    fig.suptitle(", ".join(c.name for c in runs))
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=120)
    except OSError as e:
        raise DpError("usage", f"cannot write '{out}': {e.strerror or e}") from None
    finally:
        plt.close(fig)
    steps = sum(len(c.steps) for c in runs)
    print(f"wrote {out}: {len(runs)} run{'s' if len(runs) > 1 else ''}, {steps:,} "
          f"step{'' if steps == 1 else 's'}")
    return 0


def _name(path: str, keep_folder: bool = False) -> str:
    name = path if keep_folder else os.path.basename(path)
    return name[:-len(".metrics.jsonl")] if name.endswith(".metrics.jsonl") else name

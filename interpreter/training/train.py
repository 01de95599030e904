"""Stage 5: a program's `train` block -> trained parameters in a checkpoint.

Settings: loss, optimizer, batch, epochs (or steps), seed, checkpoint, eval, and what tunes
the run: warmup and schedule (the rate of each step, schedule.py), clip (the gradient's global
norm) and patience (stopping when the held-out loss no longer improves; with `eval` the best
parameters are kept in NAME.best.safetensors). The seed fixes the initial parameters (numpy
Generator(seed)) and the order of examples (RandomState(seed + 1), one permutation per epoch,
as the PyTorch reference draws them).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
from dp.dsl import typed as T
from dp.dsl.blocks import VALUE_LOSSES
from dp.dsl.check_knobs import check_length
from dp.dsl.errors import DpError, Span, plural
from dp.interpreter.core.model import Model
from dp.interpreter.core.nonfinite import check_parameters, diagnose
from dp.interpreter.core.optim import Optimizer, clip_grad_norm, from_record, grad_norm
from dp.interpreter.data import text
from dp.interpreter.data.sources import Windows, check_vocab, dataset, fit_data
from dp.interpreter.data.streams import ExampleStream, WindowStream

from . import checkpoint, distributed
from .best import best_path, keep_if_best, patience_over
from .metrics import MetricsLog, metrics_path
from .progress import Progress
from .reports import accuracy_counts
from .schedule import factor, rates_record, tuning_record, tuning_text

VERSION = "0.1.0"
_TRAINING_STATE = ("optimizer.", "rng.")  # checkpoint tensors that are not parameters


def parse_sets(items: list[str]) -> dict[str, str]:
    """`--set lr=0.01 --set epochs=5` -> {"lr": "0.01", "epochs": "5"}."""
    sets = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or not value.strip():
            raise DpError("usage", f"--set takes NAME=VALUE, e.g. --set lr=0.01, not '{item}'")
        sets[name.strip()] = value.strip()
    return sets


def default_checkpoint(program_path: str) -> str:
    stem = os.path.splitext(os.path.basename(program_path))[0]
    return os.path.join(os.path.dirname(program_path) or ".", f"{stem}.safetensors")


def train(model: Model, config: T.TTrain, base_dir: str, ckpt_path: str, source_hash: str,
          out=None, resume: bool = False, every: int | None = None) -> dict:
    """Train `model` in place as the checked train block says, saving a checkpoint after
    every epoch (or `every` steps) and at the end, and the metrics beside it; return a
    summary. With `resume`, go on from the checkpoint and end where an uninterrupted run
    would."""
    world = distributed.join()  # one process: the world of one, without MPI
    world.check_batch(config.batch, config.span)
    out = sys.stdout if out is None else out  # read when called: redirect_stdout works
    stream, total, period, what = _stream(model, config, base_dir)
    check_length(config.schedule, total)
    held = _held_out(config, model, base_dir)
    if every is not None and every <= 0:
        raise DpError("usage", f"--checkpoint-every must be a positive number of steps, "
                      f"not {every}")
    if resume and world.root and not any(map(os.path.exists, (ckpt_path,
                                                              checkpoint.previous_path(ckpt_path)))):
        raise DpError("usage", f"--resume: there is no checkpoint at {ckpt_path} to go on "
                      f"from", None, ("train without --resume to start a run",))
    optimizer = from_record(config.optimizer)
    print(f"training {model.name}: {model.sig} ({_count(model.num_params, 'parameter')}) on {what} "
          f"with {config.optimizer.name}, batch {config.batch}{tuning_text(config)}"
          + (f", over {world.size} processes" if world.size > 1 else ""), file=out, flush=True)
    model.init(config.seed)
    state = optimizer.init_state(model.flat.size, model.dtype)
    epochs = isinstance(stream, ExampleStream)  # else text: a line every tenth of the steps
    run = (_resume(model, config, optimizer, state, stream, ckpt_path, source_hash, out, total)
           if resume and world.root else _Run())  # rank 0 reads the checkpoint
    world.share(model.flat, state, stream, run)  # rank 0's start is every rank's
    if not world.root:
        log = distributed.NoLog()
    elif resume:
        log = MetricsLog(metrics_path(ckpt_path), resume_step=run.step,
                         note={"kind": "resume", "step": run.step, "checkpoint": run.source})
    else:
        log = MetricsLog(metrics_path(ckpt_path), {
            "kind": "run", "program": config.span.file, "model": model.name,
            "program_sha256": source_hash, "loss": config.loss,
            "optimizer": optimizer.name, **optimizer.hyper,
            "batch": config.batch, "seed": config.seed, "steps": total,
            "unit": "epoch" if epochs else "step", "period": period,
            **tuning_record(config)})
    progress = Progress(total, out, done=run.step)
    periods = -(-total // period)

    def where() -> str:  # for the bar and the lines, so built only when shown
        if epochs:
            return f"epoch {(run.step - 1) // period + 1:>{len(str(periods))}}/{periods}"
        return f"step {run.step:>{len(str(total))}}/{total}"

    save = _Saver(model, config, state, stream, ckpt_path, source_hash, log, run,
                  rates_record(config, total)) if world.root else (
        lambda: check_parameters(model, run.step, config.span))  # all ranks stop together
    best = best_path(ckpt_path)
    stop = _StopOnSignal()
    started = time.perf_counter() - run.seconds
    lr, first = dict(config.optimizer.hyper)["lr"], run.step
    try:
        began = time.perf_counter()  # of a step, with drawing its batch
        for xb, yb in (stream if run.step < total and not patience_over(config, run) else ()):
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                # non-finite: checked below; dropout's masks are keyed by (seed, step); with
                # several processes, the loss and gradient of the whole batch, allreduced
                loss = world.loss_and_grad(model, config.loss, xb, yb, (config.seed, run.step),
                                           stop)
            run.step += 1
            if not math.isfinite(loss):
                raise (_made(model, config, world, xb, yb, run.step,
                             f"the loss became {loss} at step {run.step}")
                       or _numeric(loss, run.step, config.span))
            norm = grad_norm(model.grad_flat)
            if not math.isfinite(norm):
                raise (_made(model, config, world, xb, yb, run.step,
                             f"the gradient norm became {norm} at step {run.step} (the loss "
                             f"was finite)")
                       or _numeric_gradient(model, norm, run.step, config.span))
            if config.clip is not None:
                clip_grad_norm(model.grad_flat, config.clip, norm)
            rate = lr * factor(config.schedule, total, run.step)
            optimizer.update(model.flat, model.grad_flat, state, run.step, rate)
            now = time.perf_counter()
            run.seconds = now - started
            run.period_sum += loss
            run.period_steps += 1
            log.write({"kind": "step", "step": run.step, "loss": loss, "lr": rate,
                       "grad_norm": norm, "seconds": round(run.seconds, 4)})
            progress.step(where, loss, len(xb), now - began)
            if run.step % period == 0 or run.step == total:
                mean = run.period_sum / run.period_steps
                run.last_mean, run.period_sum, run.period_steps = mean, 0.0, 0
                scores = _evaluate(model, config.loss, held, world)
                if held is not None:
                    scores["best"] = keep_if_best(
                        model, run, scores["eval_loss"], best if world.root else None,
                        {"dp_version": VERSION, "model": model.name,
                         "program_sha256": source_hash})
                kind = ({"kind": "epoch", "epoch": (run.step - 1) // period + 1} if epochs
                        else {"kind": "period"})
                log.write(kind | {"step": run.step, "loss": mean, **scores,
                                  "seconds": round(run.seconds, 4)})
                over = patience_over(config, run)
                if over:
                    log.write({"kind": "stop", "step": run.step, "best_step": run.best_step,
                               "best_eval_loss": run.best_loss})
                progress.period_done(where(), mean, _scores_text(scores))
                save()
                if over:
                    print(f"stopping early: the held-out loss has not improved for "
                          f"{plural(run.waiting, 'evaluation')}; the best, {run.best_loss:.4f} "
                          f"at {_at(run.best_step, period, epochs)}, is in {best}", file=out,
                          flush=True)
                    break
            elif every and run.step % every == 0:
                save()
            if world.stops(stop):  # with several processes: all of them, after the same step
                save()
                raise _interrupted(run.step, total, ckpt_path)
            if run.step == total:
                break
            began = time.perf_counter()
        if held is not None and run.best_step and run.step > first and \
                not patience_over(config, run):
            print(f"the best held-out loss, {run.best_loss:.4f} at "
                  f"{_at(run.best_step, period, epochs)}, is in {best} (dp run --best)",
                  file=out, flush=True)
    finally:
        stop.restore()
        progress.close()
        log.close()
    return {"steps": run.step, "seconds": run.seconds, "final_loss": run.last_mean,
            "best": best if held is not None and run.best_step else None,
            "first_step_seconds": progress.first}  # the plan built, the kernels loaded


def _stream(model: Model, config: T.TTrain, base_dir: str):
    """(the batches, steps in all, steps between report lines, what the data is). Text has
    a number of steps: the checker sees to it."""
    ds = dataset(config.data, base_dir, model.arg_shapes[0])
    if isinstance(ds, Windows):
        check_vocab(ds, model, config.data.span)
        model.vocab = ds.vocab
        return (WindowStream(ds, config.batch, config.seed), config.steps,
                max(1, -(-config.steps // 10)),
                f"random windows of {ds.seq} characters of {ds.corpus.name}")
    ds = fit_data(ds, model, config.loss, config.data.span)
    model.vocab = ds.vocab
    stream = ExampleStream(ds, config.batch, config.seed)
    return (stream, config.steps or stream.per_epoch * config.epochs, stream.per_epoch,
            _count(len(ds), "example"))


@dataclass
class _Run:
    """Where a run is: what a checkpoint records beside the parameters and optimizer."""

    step: int = 0
    seconds: float = 0.0
    period_sum: float = 0.0  # the losses of the epoch (or period) so far, summed in order
    period_steps: int = 0
    last_mean: float = float("nan")
    source: str = ""
    best_loss: float = math.inf  # the lowest held-out loss so far, at step best_step
    best_step: int = 0
    waiting: int = 0  # evaluations since the best: `patience` stops the run at its value

    def best_state(self) -> dict:
        """For the checkpoint's metadata, when there is one (JSON has no infinity)."""
        if not (self.best_step or self.waiting):
            return {}
        loss = self.best_loss if math.isfinite(self.best_loss) else None
        return {"best": json.dumps({"loss": loss, "step": self.best_step,
                                    "waiting": self.waiting})}


class _Saver:
    def __init__(self, model, config, state, stream, path, source_hash, log, run, rates):
        self.args = (model, config, state, stream, path, source_hash)
        self.log, self.run, self.rates, self.saved = log, run, rates, -1

    def __call__(self) -> None:
        if self.saved != self.run.step:
            check_parameters(self.args[0], self.run.step, self.args[1].span)
            self.log.flush()  # the metrics reach the checkpoint's step first
            _save(*self.args, self.run, self.rates)
            self.saved = self.run.step


class _StopOnSignal:
    """Ctrl-C (SIGINT) or SIGTERM ends training after the current step, with a checkpoint,
    instead of in the middle of an update."""

    def __init__(self):
        self.requested, self.old = False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._request)

    def _request(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def _interrupted(step: int, total: int, path: str) -> DpError:
    err = DpError("interrupted", f"training stopped at step {step} of {total}", None,
                  (f"the checkpoint {path} holds step {step}; go on with `dp train FILE "
                   f"--resume`",))
    err.exit_code = 130
    return err


def _count(n: int, word: str) -> str:
    """`1,500 examples`, `1 example`."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _held_out(config: T.TTrain, model: Model, base_dir: str):
    """The `eval` setting's data (held out: the checker sees to it), read once, or None."""
    if config.eval is None:
        return None
    ds = dataset(config.eval, base_dir, model.arg_shapes[0], model.vocab)
    return fit_data(ds, model, config.loss, config.eval.span)


def _evaluate(model: Model, loss: str, held, world: distributed.World) -> dict:
    """The held-out scores; with several processes each scores its share, then they sum."""
    if held is None:
        return {}
    x, y = world.part(held.x), world.part(held.y)
    scores = {"eval_loss": world.mean(model.loss(loss, x, y) if len(x) else 0.0, len(x))}
    if loss not in VALUE_LOSSES:  # classes, tokens, or two classes by a score's sign
        right, total = accuracy_counts(model.predict(x), y, loss) if len(x) else (0, 0)
        right, total = world.counts(right, total)
        scores["eval_accuracy"] = right / max(total, 1)
    return scores


def _at(step: int, period: int, epochs: bool) -> str:
    return f"epoch {(step - 1) // period + 1}" if epochs else f"step {step}"


def _scores_text(scores: dict) -> str:
    parts = []
    if "eval_loss" in scores:
        parts.append(f"held-out loss {scores['eval_loss']:.4f}")
    if "eval_accuracy" in scores:
        parts.append(f"accuracy {scores['eval_accuracy']:.4f}")
    return "  ".join(parts)


def _resume(model: Model, config: T.TTrain, optimizer: Optimizer, state: dict, stream,
            path: str, source_hash: str, out, total: int) -> _Run:
    """Parameters, optimizer state, data streams and counters from the checkpoint."""
    tensors, meta, used = checkpoint.load_checkpoint_or_previous(path)
    if used != path:
        print(f"{path} cannot be read; going on from {used}", file=out, flush=True)
    if "stream" not in meta:
        raise DpError("checkpoint", f"--resume: {used} holds no training state (it was written "
                      f"by an older dp)", None, ("train without --resume to start again",))
    if meta.get("program_sha256") != source_hash:
        raise DpError("checkpoint", f"--resume: {used} was trained from another version of "
                      f"the program", None, ("resuming needs the program that wrote the "
                                             "checkpoint; change settings with --set",))
    settings = json.loads(meta.get("settings", "{}"))
    for key in ("batch", "seed"):
        if settings.get(key) != getattr(config, key):
            raise DpError("checkpoint", f"--resume: {used} was trained with {key} "
                          f"{settings.get(key)}, this run has {getattr(config, key)}", None,
                          (f"resume with --set {key}={settings.get(key)}",))
    if settings.get("rates") != rates_record(config, total):
        raise DpError("checkpoint", f"--resume: {used} was trained with other learning rates: "
                      f"{_rates_text(settings.get('rates'))}, this run has "
                      f"{_rates_text(rates_record(config, total))}", None,
                      ("the rate of every step depends on the warmup, the schedule and, when "
                       "it decays, the run's length: resume with the same",))
    params = {k: v for k, v in tensors.items() if not k.startswith(_TRAINING_STATE)}
    checkpoint.check_against(params, {p: tuple(v.shape) for p, v in model.params.items()},
                             used)
    model.load(params)
    for k, v in state.items():
        saved = tensors.get(f"optimizer.{k}")
        if saved is None or saved.shape != v.shape:
            raise DpError("checkpoint", f"--resume: {used} has no optimizer state '{k}' "
                          f"({v.size:,} values)", None,
                          ("it was trained with other optimizer arguments; resume with the "
                           "same --set",))
        v[...] = saved
    stream.restore(tensors, meta["stream"])
    run = _Run(step=int(meta["step"]), seconds=float(meta["seconds"]),
               period_sum=float(meta["period_sum"]), period_steps=int(meta["period_steps"]),
               last_mean=float(meta["last_mean"]), source=used)
    if "best" in meta:
        best = json.loads(meta["best"])
        run.best_loss = math.inf if best["loss"] is None else best["loss"]
        run.best_step, run.waiting = best["step"], best["waiting"]
    print(f"resuming from {used} at step {run.step}", file=out, flush=True)
    return run


def _made(model: Model, config: T.TTrain, world, xb, yb, step: int, trouble: str):
    """The error naming the primitive that made step `step`'s first non-finite value, its
    batch run again one primitive at a time (once: nonfinite.py), each process on its share
    of the batch: the first process's whose share made one (every process calls this at the
    same step, an empty share too); None when every share stays finite."""
    lo, hi = world.bounds(len(xb))
    key = (config.seed, step - 1) + ((lo,) if world.size > 1 else ())
    found = diagnose(model, config.loss, xb[lo:hi], yb[lo:hi], key, step, trouble) \
        if hi > lo else None
    return world.diagnosed(found, len(xb))


def _numeric(loss: float, step: int, span: Span) -> DpError:
    err = DpError("numeric", f"the loss became {loss} at step {step}; training stopped", span,
                  ("try a smaller learning rate; the last good checkpoint is unchanged",))
    err.exit_code = 3
    return err


def _numeric_gradient(model: Model, norm: float, step: int, span: Span) -> DpError:
    """A non-finite gradient with a finite loss: no update is made with it, ever."""
    first = next((name for name, g in model.grads.items() if not np.isfinite(g).all()), None)
    err = DpError("numeric", f"the gradient norm became {norm} at step {step} (the loss was "
                  f"finite); training stopped before updating", span,
                  ((f"the first parameter with a non-finite gradient is '{first}'",) if first
                   else ()) + ("try a smaller learning rate; the last good checkpoint is "
                               "unchanged",))
    err.exit_code = 3
    return err


def _rates_text(rates: dict | None) -> str:
    if rates is None:
        return "a constant rate"
    return ", ".join(f"{k} {v}" for k, v in rates.items())


def _save(model: Model, config: T.TTrain, state: dict, stream, path: str,
          source_hash: str, run: _Run, rates: dict | None) -> None:
    tensors = dict(model.params)
    tensors.update({f"optimizer.{k}": v for k, v in state.items()})
    rng_tensors, stream_state = stream.state()
    tensors.update(rng_tensors)
    meta = {"dp_version": VERSION, "model": model.name, "program_sha256": source_hash,
            "step": str(run.step), "seconds": repr(run.seconds),
            "optimizer": config.optimizer.name, "loss": config.loss, "stream": stream_state,
            "period_sum": repr(run.period_sum), "period_steps": str(run.period_steps),
            "last_mean": repr(run.last_mean), **run.best_state(),
            "settings": json.dumps({"batch": config.batch, "seed": config.seed,
                                    **({"rates": rates} if rates else {})})}
    if model.vocab is not None:  # so that text after loading maps to the same ids
        meta["vocab"] = model.vocab.to_json()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    checkpoint.save_checkpoint(path, tensors, meta)


def checkpoint_path(file: str, given: str | None, config: T.TTrain | None) -> str:
    """--checkpoint, else the program's `checkpoint` setting (relative to it), else beside it."""
    if given:
        return given
    if config is not None and config.checkpoint:
        return os.path.join(os.path.dirname(file), config.checkpoint)
    return default_checkpoint(file)


def load_trained(model: Model, path: str, span: Span | None = None) -> dict:
    """Load a checkpoint's parameters into `model`; returns its metadata."""
    tensors, meta = checkpoint.load_checkpoint(path, span)
    params = {k: v for k, v in tensors.items() if not k.startswith(_TRAINING_STATE)}
    expected = {p: tuple(v.shape) for p, v in model.params.items()}
    checkpoint.check_against(params, expected, path, span)
    model.load(params)
    if "vocab" in meta:
        model.vocab = text.Vocab.from_json(meta["vocab"], path, span)
    return meta

"""Stage 5: a program's `train` block -> trained parameters in a checkpoint.

Settings: loss, optimizer, batch, epochs (or steps), seed, checkpoint. The seed fixes the
initial parameters (numpy Generator(seed)) and the order of examples (RandomState(seed + 1),
one permutation per epoch, as the PyTorch reference draws them).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from dp.dsl import ast
from dp.dsl.checker import _suggest
from dp.dsl.errors import DpError, Span

from . import checkpoint, data, text
from .model import Model, check_loss
from .optim import DEFAULTS, Optimizer, make_optimizer
from .progress import Progress
from .sources import Windows, check_vocab, dataset, fit_data, literal

SETTINGS = ("loss", "optimizer", "batch", "epochs", "steps", "seed", "checkpoint")
OVERRIDES = ("batch", "epochs", "steps", "seed")  # and the optimizer's arguments
VERSION = "0.1.0"


@dataclass
class TrainConfig:
    loss: str
    optimizer: Optimizer
    batch: int
    epochs: int
    steps: int | None
    seed: int
    checkpoint: str | None
    span: Span


def _int_setting(s: ast.Setting) -> int:
    v = literal(s.value, s.name)
    if not isinstance(v, int) or v <= 0:
        raise DpError("value", f"{s.name} must be a positive whole number", s.value.span)
    return v


def train_config(block: ast.TrainBlock, overrides: dict | None = None) -> TrainConfig:
    """Read and validate the settings of a train block (before anything runs)."""
    found: dict[str, ast.Setting] = {}
    for s in block.settings:
        if s.name not in SETTINGS:
            raise DpError("name", f"unknown training setting '{s.name}'", s.span,
                          ("settings: " + ", ".join(SETTINGS),))
        if s.name in found:
            raise DpError("name", f"the setting '{s.name}' is given twice", s.span)
        found[s.name] = s
    for need in ("loss", "optimizer"):
        if need not in found:
            raise DpError("name", f"the train block needs a '{need}' setting", block.span,
                          ("e.g. loss cross_entropy; optimizer sgd(lr = 0.1)",))
    loss = found["loss"].value
    if not isinstance(loss, ast.Name):
        raise DpError("type", "loss must name a loss, e.g. loss cross_entropy", loss.span)
    sets = {k: v for k, v in (overrides or {}).items() if v is not None}
    opt = found["optimizer"].value
    if isinstance(opt, ast.Name):
        name, args = opt.name, {}
    elif isinstance(opt, ast.Call) and not opt.args:
        name, args = opt.func, {kw.name: literal(kw.value, kw.name) for kw in opt.kwargs}
    else:
        raise DpError("type", "optimizer must be like sgd(lr = 0.1, momentum = 0.9)", opt.span)
    hyper = DEFAULTS.get(name, {})
    for k in [k for k in sets if k in hyper]:  # the optimizer's own rules check them, below
        args[k] = _number(k, sets.pop(k), float)
    for k, v in sets.items():
        if k not in OVERRIDES:
            known = list(OVERRIDES) + list(hyper)
            raise DpError("usage", f"--set {k}: the program has no setting '{k}'", None,
                          _suggest(k, known) + (f"settings: {', '.join(OVERRIDES)}; "
                                                f"{name}: {', '.join(hyper)}",))
        v = sets[k] = _number(k, v, int)
        if v < 0 or (v == 0 and k != "seed"):
            rule = "non-negative" if k == "seed" else "positive"
            raise DpError("usage", f"--{k} must be {rule}, but it is {v}")
    optimizer = make_optimizer(name, args, opt.span)
    ints = {k: _int_setting(found[k]) for k in ("batch", "epochs", "steps") if k in found}
    seed = literal(found["seed"].value, "seed") if "seed" in found else 0
    ckpt = found.get("checkpoint")
    config = TrainConfig(loss.name, optimizer, ints.get("batch", 32), ints.get("epochs", 1),
                         ints.get("steps"), int(seed),
                         str(literal(ckpt.value, "checkpoint")) if ckpt else None, block.span)
    for k, v in sets.items():
        setattr(config, k, v)
    return config


def parse_sets(items: list[str]) -> dict[str, str]:
    """`--set lr=0.01 --set epochs=5` -> {"lr": "0.01", "epochs": "5"}."""
    sets = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or not value.strip():
            raise DpError("usage", f"--set takes NAME=VALUE, e.g. --set lr=0.01, not '{item}'")
        sets[name.strip()] = value.strip()
    return sets


def _number(name: str, value, kind):
    """A value from the command line: already a number (--lr) or the text of --set."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        return kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise DpError("usage", f"--set {name}={value}: {name} must be {what}") from None


def program_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_checkpoint(program_path: str) -> str:
    stem = os.path.splitext(os.path.basename(program_path))[0]
    return os.path.join(os.path.dirname(program_path) or ".", f"{stem}.safetensors")


def train(model: Model, block: ast.TrainBlock, config: TrainConfig, base_dir: str,
          ckpt_path: str, source_hash: str, out=sys.stdout) -> dict:
    """Train `model` in place as the block says; save a checkpoint; return a summary."""
    check_loss(config.loss, model, block.span)
    ds = dataset(block.data, base_dir, model.arg_shapes[0])
    if isinstance(ds, Windows):
        check_vocab(ds, model, block.data.span)
        if config.steps is None:
            raise DpError("value", "training on text needs a number of steps: it draws "
                          "random windows, so there are no epochs", block.span,
                          ("e.g. steps 300",))
        model.vocab = ds.vocab
        what = f"random windows of {ds.seq} characters of {ds.corpus.name}"
    else:
        ds = fit_data(ds, model, config.loss, block.data.span)
        model.vocab = ds.vocab
        what = f"{len(ds):,} examples"
    print(f"training {model.name}: {model.sig} ({model.num_params:,} parameters) on {what} "
          f"with {config.optimizer.name}, batch {config.batch}", file=out, flush=True)
    model.init(config.seed)
    state = config.optimizer.init_state(model.flat.size, model.dtype)
    total, per_epoch, epoch_batches = _schedule(ds, config)
    epochs = math.ceil(total / per_epoch)
    progress = Progress(total, epochs, config.batch, out)
    step, last_losses, started = 0, [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_losses = []
        for xb, yb in epoch_batches():
            loss = model.loss_and_grad(config.loss, xb, yb)
            step += 1
            if not math.isfinite(loss):
                progress.close()
                raise _numeric(loss, step, block)
            config.optimizer.update(model.flat, model.grad_flat, state, step)
            epoch_losses.append(loss)
            progress.step(epoch, loss, len(xb))
            if step == total:
                break
        last_losses = epoch_losses
        progress.epoch_done(epoch, float(np.mean(epoch_losses)))
        if step == total:
            break
    progress.close()
    seconds = time.perf_counter() - started
    _save(model, config, state, step, epoch, ckpt_path, source_hash)
    return {"steps": step, "epochs": epoch, "seconds": seconds,
            "final_loss": float(np.mean(last_losses))}


def _schedule(ds, config: TrainConfig):
    """(steps in all, steps per epoch, a function giving one epoch's batches). Text is one
    epoch of `steps` random windows; examples are shuffled once per epoch."""
    if isinstance(ds, Windows):
        draws = ds.batches(config.batch, config.seed)
        return config.steps, config.steps, lambda: itertools.islice(draws, config.steps)
    order = np.random.RandomState(config.seed + 1)
    per_epoch = data.num_batches(len(ds), config.batch)
    return (config.steps or per_epoch * config.epochs, per_epoch,
            lambda: data.batches(ds, config.batch, order))


def _numeric(loss: float, step: int, block: ast.TrainBlock) -> DpError:
    err = DpError("numeric", f"the loss became {loss} at step {step}; training stopped",
                  block.span, ("try a smaller learning rate; the last good checkpoint is "
                               "unchanged",))
    err.exit_code = 3
    return err


def _save(model: Model, config: TrainConfig, state: dict, step: int, epoch: int, path: str,
          source_hash: str) -> None:
    tensors = dict(model.params)
    tensors.update({f"optimizer.{k}": v for k, v in state.items()})
    meta = {"dp_version": VERSION, "model": model.name, "program_sha256": source_hash,
            "step": str(step), "epoch": str(epoch), "optimizer": config.optimizer.name,
            "loss": config.loss}
    if model.vocab is not None:  # so that text after loading maps to the same ids
        meta["vocab"] = model.vocab.to_json()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    checkpoint.save_checkpoint(path, tensors, meta)


def load_trained(model: Model, path: str, span: Span | None = None) -> dict:
    """Load a checkpoint's parameters into `model`; returns its metadata."""
    tensors, meta = checkpoint.load_checkpoint(path, span)
    params = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    expected = {p: tuple(v.shape) for p, v in model.params.items()}
    checkpoint.check_against(params, expected, path, span)
    model.load(params)
    if "vocab" in meta:
        model.vocab = text.Vocab.from_json(meta["vocab"], path, span)
    return meta

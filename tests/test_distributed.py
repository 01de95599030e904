"""Data-parallel training over MPI (`dp train --workers N`, `mpiexec -n N dp train`): N ranks
end where one process ends, every rank holds the same parameters, runs repeat bitwise, a rank
that dies ends the job with a checkpoint that resumes, and the misuses are clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from conftest import dp_here, program_in, run_dp
from dp.interpreter.training import checkpoint
from dp.interpreter.training.metrics import metrics_path, read_records

MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
DROPOUT = """\
Net: R^64 -> R^10
Net(x) = FeedForward(dropout(relu(FeedForward(x) : R^128); p = 0.3))

train Net on digits(split = train):
  loss cross_entropy; optimizer sgd(lr = 0.1, momentum = 0.9); batch 32; epochs 1
"""


def _tensors(path: Path) -> dict[str, np.ndarray]:
    return {k: v for k, v in safetensors.numpy.load_file(str(path)).items()
            if not k.startswith("rng.")}


def _train(prog: Path, ckpt: str, *flags: str, workers: int = 1):
    """`dp train` of 50 steps: in this process, or over `workers` ranks (a real mpiexec)."""
    args = ("train", prog, "--steps", "50", "--checkpoint", prog.parent / ckpt, *flags)
    if workers == 1:
        return dp_here(*args)
    return run_dp(*args, "--workers", str(workers), timeout=120)


def _mpi_script(tmp_path: Path, body: str, n: int = 2, timeout: float = 60):
    """A Python script run as `mpiexec -n N python script`: (exit code, stdout, stderr)."""
    script = tmp_path / "script.py"
    script.write_text(body)
    proc = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """digits_mlp for 50 steps: one process, and twice over two ranks."""
    tmp = tmp_path_factory.mktemp("runs")
    prog = program_in(tmp)
    done = {"one": _train(prog, "one.safetensors")}
    for name in ("two", "again"):
        done[name] = _train(prog, f"{name}.safetensors", workers=2)
    for code, out, err in done.values():
        assert code == 0, err
    return tmp, done


def test_two_ranks_end_with_the_parameters_of_one_process(runs):
    tmp, done = runs
    one, two = _tensors(tmp / "one.safetensors"), _tensors(tmp / "two.safetensors")
    assert one.keys() == two.keys() and "optimizer.momentum" in one
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=0, atol=1e-6, err_msg=k)
    # the same global batch: the same losses, the held-out scores reduced over both ranks
    a, b = (read_records(metrics_path(str(tmp / f"{n}.safetensors"))) for n in ("one", "two"))
    assert [r["kind"] for r in a] == [r["kind"] for r in b]
    for ra, rb in zip(a[1:], b[1:], strict=True):
        assert rb["step"] == ra["step"] and abs(rb["loss"] - ra["loss"]) < 1e-5
        for key in ("eval_loss", "eval_accuracy"):
            assert (key in rb) == (key in ra) and abs(rb.get(key, 0) - ra.get(key, 0)) < 1e-5
    assert b[0]["batch"] == 32  # the program's batch is the global one
    out = done["two"][1]
    assert "batch 32, over 2 processes" in out
    assert out.count("training Digits") == 1 and out.count("accuracy(Digits") == 1  # rank 0


def test_two_runs_over_two_ranks_are_bitwise_the_same(runs):
    tmp, _ = runs
    two, again = _tensors(tmp / "two.safetensors"), _tensors(tmp / "again.safetensors")
    for k in two:
        assert two[k].tobytes() == again[k].tobytes(), k


def test_every_rank_holds_bitwise_the_same_parameters(tmp_path):
    prog = program_in(tmp_path)
    code, out, err = _mpi_script(tmp_path, f"""
import dataclasses, sys
import numpy as np
from dp.dsl.loader import load_programs
from dp.interpreter.core.model import Model
from dp.interpreter.training import distributed
from dp.interpreter.training.train import train

world = distributed.join()
tprog, _ = load_programs([{str(prog)!r}])
config = dataclasses.replace(tprog.train, steps=50)
model = Model(tprog, config.model, config.model_span)
train(model, config, ".", "rank.safetensors", "hash")
np.save(f"rank{{world.rank}}.npy", model.flat)
sys.stderr.write(f"rank {{world.rank}} of {{world.size}}\\n")
""")
    assert code == 0, err
    assert "rank 0 of 2" in err and "rank 1 of 2" in err
    first, second = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    assert first.tobytes() == second.tobytes()
    saved = _tensors(tmp_path / "rank.safetensors")  # rank 0's checkpoint holds them
    assert np.concatenate([saved[k].ravel() for k in sorted(saved)
                           if not k.startswith("optimizer.")]).size == first.size


def test_dropout_drops_over_two_ranks_what_one_process_drops(tmp_path):
    """Masks are keyed by each example's index in the whole batch, not in a rank's slice."""
    prog = program_in(tmp_path, DROPOUT)
    assert _train(prog, "one.safetensors")[0] == 0
    code, _, err = _train(prog, "two.safetensors", workers=2)
    assert code == 0, err
    one, two = _tensors(tmp_path / "one.safetensors"), _tensors(tmp_path / "two.safetensors")
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=0, atol=1e-6, err_msg=k)


def test_a_checkpoint_of_two_ranks_resumes_in_one_process(tmp_path):
    prog = program_in(tmp_path)
    code, _, err = run_dp("train", prog, "--steps", "60", "--checkpoint",
                          tmp_path / "split.safetensors", "--workers", "2", timeout=120)
    assert code == 0, err
    code, out, err = dp_here("train", prog, "--steps", "100", "--checkpoint",
                             tmp_path / "split.safetensors", "--resume")
    assert code == 0 and "resuming from" in out, err
    assert dp_here("train", prog, "--steps", "100", "--checkpoint",
                   tmp_path / "whole.safetensors")[0] == 0
    split, whole = (_tensors(tmp_path / f"{n}.safetensors") for n in ("split", "whole"))
    for k in whole:
        np.testing.assert_allclose(split[k], whole[k], rtol=0, atol=1e-6, err_msg=k)


def _rank_pid(mark: str, rank: int) -> int | None:
    """The process of the given rank among those started with DP_TEST_MARK=mark."""
    want = (f"DP_TEST_MARK={mark}".encode(), f"PMI_RANK={rank}".encode())
    for d in os.listdir("/proc"):
        try:
            env = Path(f"/proc/{d}/environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if all(w in env for w in want):
            return int(d)
    return None


def _start(prog: Path, ckpt: Path, *flags: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dp.interpreter.commands.cli", "train",
                             str(prog), "--steps", "600", "--checkpoint", str(ckpt),
                             "--workers", "2", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within a minute"
        time.sleep(0.02)


def test_a_killed_rank_ends_the_job_and_the_checkpoint_resumes(tmp_path):
    prog, ckpt = program_in(tmp_path), tmp_path / "k.safetensors"
    mark = f"dp-test-{os.getpid()}-{time.monotonic_ns()}"
    proc = _start(prog, ckpt, "--checkpoint-every", "20",
                  env=dict(os.environ, DP_TEST_MARK=mark))
    _wait_for(ckpt, proc)
    pid = _rank_pid(mark, 1)
    assert pid is not None and proc.poll() is None
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    proc.communicate(timeout=30)
    assert time.monotonic() - killed < 10  # no rank waits for the dead one
    assert proc.returncode != 0
    _, meta = checkpoint.load_checkpoint(str(ckpt))  # whole and loadable
    step = int(meta["step"])
    assert 0 < step < 600
    code, out, err = run_dp("train", prog, "--steps", "600", "--checkpoint", ckpt,
                            "--resume", "--checkpoint-every", "20", "--workers", "2",
                            timeout=120)
    assert code == 0, err
    assert f"resuming from {ckpt} at step {step}" in out
    assert checkpoint.load_checkpoint(str(ckpt))[1]["step"] == "600"
    steps = [r["step"] for r in read_records(metrics_path(str(ckpt))) if r["kind"] == "step"]
    assert steps == list(range(1, 601))  # the metrics go on from the checkpoint's step


def test_ctrl_c_stops_every_rank_after_the_same_step_with_a_checkpoint(tmp_path):
    prog, ckpt = program_in(tmp_path), tmp_path / "c.safetensors"
    proc = _start(prog, ckpt, start_new_session=True)
    _wait_for(ckpt, proc)  # the first epoch's checkpoint
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: dp, mpiexec and the ranks
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    step = checkpoint.load_checkpoint(str(ckpt))[1]["step"]
    assert err.count("error[interrupted]") == 1  # rank 0 says it
    assert f"error[interrupted]: training stopped at step {step} of 600" in err


def test_a_batch_that_does_not_divide_among_the_ranks_is_an_error_before_training(tmp_path):
    prog = program_in(tmp_path)
    code, out, err = run_dp("train", prog, "--set", "batch=33", "--workers", "2",
                            "--checkpoint", tmp_path / "b.safetensors", timeout=120)
    assert code == 1
    assert out == ""  # nothing started
    assert err.startswith("error[value]: batch 33 does not divide among 2 processes\n")
    assert err.count("error[") == 1  # said once, by rank 0
    assert "give a batch that is a multiple of 2" in err
    assert "BAD TERMINATION" not in err
    assert not (tmp_path / "b.safetensors").exists()


def test_an_error_on_one_rank_in_the_setup_is_said_once_and_ends_every_rank(tmp_path):
    prog = program_in(tmp_path)
    code, out, err = _mpi_script(tmp_path, f"""
import sys
from dp.dsl.errors import DpError
from dp.interpreter.commands import cli
from dp.interpreter.training import distributed
from dp.interpreter.training import train as T

read = T._held_out
def held_out(*args):  # as if rank 1's machine could not read the held-out data
    if distributed.WORLD.rank == 1:
        raise DpError("data", "cannot read the digits here")
    return read(*args)
T._held_out = held_out
sys.exit(cli.main(["train", {str(prog)!r}, "--steps", "5"]))
""")
    assert code == 1
    assert err == ("error[data]: cannot read the digits here\n"
                   "   = note: met by process 1 of 2\n")
    assert "trained" not in out and not (tmp_path / "prog.safetensors").exists()


def test_a_crash_on_one_rank_while_training_ends_the_job(tmp_path):
    prog = program_in(tmp_path)
    code, _, err = _mpi_script(tmp_path, f"""
import sys
from dp.interpreter.commands import cli
from dp.interpreter.training import distributed
from dp.interpreter.training import train as T

evaluate = T._evaluate
def crash(*args):
    if distributed.WORLD.rank == 1:
        raise RuntimeError("a bug on rank 1")
    return evaluate(*args)
T._evaluate = crash
sys.exit(cli.main(["train", {str(prog)!r}, "--steps", "200"]))
""", timeout=30)
    assert code != 0
    assert "error[internal]" in err  # rank 1's, before it ended the job


def test_workers_without_mpi_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    code, out, err = dp_here("train", program_in(tmp_path), "--workers", "2")
    assert code == 1 and out == ""
    assert err == ("error[install]: --workers needs MPI, and mpi4py is not installed\n"
                   "   = note: install dp's mpi extra: pip install 'dp[mpi]' (mpi4py and the "
                   "mpich wheel, which brings its own mpiexec)\n")


def test_under_a_launcher_without_mpi_every_rank_stops_and_rank_0_says_why(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    for rank, shown in (("0", True), ("1", False)):
        monkeypatch.setenv("PMI_RANK", rank)
        code, _, err = dp_here("train", program_in(tmp_path), "--steps", "5")
        assert code == 1
        if shown:
            assert err.startswith("error[install]: running as one of 2 processes needs MPI")
        else:
            assert err == ""


@pytest.mark.parametrize("flags, message", [
    (("--workers", "0"), "--workers takes a number of processes, at least 1, not 0"),
    (("--workers", "3"), "--workers 3, but the launcher started 2 processes"),
])
def test_workers_misuses_are_usage_errors(tmp_path, monkeypatch, flags, message):
    monkeypatch.setenv("PMI_SIZE", "2")
    code, _, err = dp_here("train", program_in(tmp_path), *flags)
    assert code == 2
    assert err.startswith(f"error[usage]: {message}\n")


def test_one_worker_trains_in_this_process_without_mpi(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    prog = program_in(tmp_path)
    code, out, err = dp_here("train", prog, "--steps", "5", "--workers", "1")
    assert code == 0, err
    assert "over" not in out.splitlines()[0]


def test_each_rank_gets_the_threads_of_its_share_of_the_cores(tmp_path):
    code, out, err = _mpi_script(tmp_path, """
import os
from dp.interpreter.training import distributed
for name in distributed._THREADS:
    os.environ.pop(name, None)
distributed.start_workers(None, [])
cores = len(os.sched_getaffinity(0))
print(os.environ["OPENBLAS_NUM_THREADS"], os.environ["NUMBA_NUM_THREADS"], max(1, cores // 2))
""")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    for line in lines:
        blas, numba, expected = line.split()
        assert blas == numba == expected


def test_a_resumed_run_over_other_ranks_keeps_the_metrics_of_the_first(tmp_path):
    """--resume under MPI with another N: rank 0 reads the checkpoint, the others get it."""
    prog = program_in(tmp_path)
    ckpt = tmp_path / "m.safetensors"
    assert dp_here("train", prog, "--steps", "30", "--checkpoint", ckpt)[0] == 0
    code, out, err = run_dp("train", prog, "--steps", "60", "--checkpoint", ckpt, "--resume",
                            "--workers", "2", timeout=120)
    assert code == 0, err
    records = read_records(metrics_path(str(ckpt)))
    assert [r["kind"] for r in records[:2]] == ["run", "step"]
    assert {"kind": "resume", "step": 30, "checkpoint": str(ckpt)} in records
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 61))
    assert records[-1]["step"] == 60


def test_a_ranks_dropout_key_names_its_first_example_and_only_batched_values_use_it(tmp_path):
    """A rank's key (seed, step, first) gives its slice of the whole batch's masks; a value
    without a batch axis (here a parameter) gets the same mask on every rank."""
    from dp.dsl.loader import load_programs
    from dp.interpreter.core.model import Model

    path = tmp_path / "drop.dp"
    path.write_text("Rows: R^8 -> R^8\nRows(x) = dropout(x; p = 0.5)\n\n"
                    "Weights: R^8 -> R^8\nWeights(x) = dropout(W; p = 0.5) x\n"
                    "  param W: R^(8, 8) ~ glorot\n")
    tprog, _ = load_programs([str(path)])
    x = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    rows = Model(tprog, "Rows")
    whole = rows.vjp(x, key=(1, 2))[0]
    np.testing.assert_array_equal(rows.vjp(x[5:], key=(1, 2, 5))[0], whole[5:])
    assert not np.array_equal(rows.vjp(x[5:], key=(1, 2))[0], whole[5:])
    weights = Model(tprog, "Weights")
    weights.init(0)
    np.testing.assert_array_equal(weights.vjp(x[5:], key=(1, 2, 5))[0],
                                  weights.vjp(x, key=(1, 2))[0][5:])

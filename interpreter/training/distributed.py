"""Data-parallel training over MPI: everything dp knows about running as one of N processes.

`mpiexec -n N dp train FILE` (or `srun`, or `dp train FILE --workers N`, which starts the local
mpiexec) runs N ranks of one training. The program's `batch` stays the global batch: each rank
takes its slice of every batch of the same seeded example order, computes the mean loss and
gradient of its slice, and one allreduce of the flat gradient buffer (each rank's weighted by
its share of the batch) gives every rank the gradient of the whole batch, so every rank makes
the same optimizer step. Rank 0's parameters, optimizer state and stream are broadcast once at
the start; rank 0 alone prints, writes metrics and checkpoints.

Errors: an error in the setup (before the first step) is agreed on, so that rank 0 prints the
first failing rank's error and every rank exits cleanly; the loop's own errors (a non-finite
loss, an interruption) come from allreduced values, so every rank meets them at the same step.
A non-finite loss or gradient is diagnosed by each rank on its share of the batch, and rank 0
prints the first rank's diagnosis (`diagnosed`).
Anything else on one rank aborts the job (MPI_Abort), so that no rank waits forever.

With one process nothing here imports MPI and every method does nothing (the world of one).
NumPy is imported inside functions: the command line calls `start_workers` before NumPy loads,
so that thread counts set here reach BLAS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from dp.dsl.errors import DpError, Span

# the loop's errors that every rank raises at the same step (from allreduced values)
_COLLECTIVE = ("numeric", "interrupted")
_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name, "")
        digits = value.split("(")[0].split(",")[0]  # Slurm's "2(x3)" tasks per node
        if digits.isdigit():
            return int(digits)
    return None


def launched_size() -> int | None:
    """How many processes an MPI launcher (mpiexec, srun --mpi=pmi2) started: 1 when none
    did, None when one did without saying how many (PMIx: MPI will tell)."""
    size = _env_int("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
    if size is None and "PMIX_RANK" in os.environ:
        return None
    return size or 1


def _env_rank() -> int:
    return _env_int("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK") or 0


def _local_ranks() -> int:
    return _env_int("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE",
                    "SLURM_STEP_TASKS_PER_NODE") or 1


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _no_mpi(what: str) -> DpError:
    return DpError("install", f"{what} needs MPI, and mpi4py is not installed", None,
                   ("install dp's mpi extra: pip install 'dp[mpi]' (mpi4py and the mpich "
                    "wheel, which brings its own mpiexec)",))


def start_workers(workers: int | None, argv: list[str]) -> int | None:
    """Before NumPy loads: under a launcher, this rank's BLAS and Numba threads default to
    cores / ranks on its machine; `--workers N` outside one runs `mpiexec -n N` on this same
    command line and returns its exit code. None: go on in this process."""
    size = launched_size()
    if size != 1:
        for name in _THREADS:
            os.environ.setdefault(name, str(max(1, _cores() // _local_ranks())))
    if workers is None:
        return None
    if workers < 1:
        raise DpError("usage", f"--workers takes a number of processes, at least 1, not "
                               f"{workers}")
    if size != 1:  # started by mpiexec already: --workers must agree with it
        if size is not None and size != workers:
            raise DpError("usage", f"--workers {workers}, but the launcher started {size} "
                          f"processes", None, ("under mpiexec or srun, leave --workers out",))
        return None
    if workers == 1:
        return None
    try:
        import mpi4py  # noqa: F401  (the package only: MPI starts in the ranks)
    except ImportError:
        raise _no_mpi("--workers") from None
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = here if os.access(here, os.X_OK) else shutil.which("mpiexec")
    if mpiexec is None:
        raise _no_mpi("--workers").with_note("mpi4py is installed, but no mpiexec was found "
                                             "beside Python or on the PATH")
    cmd = [mpiexec, "-n", str(workers), sys.executable, "-m", "dp.interpreter.commands.cli",
           *argv]
    import signal

    try:  # Ctrl-C reaches mpiexec, which passes it to the ranks: they stop after a step
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        old = None
    try:
        sys.stdout.flush()
        return abs(subprocess.call(cmd))
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


class World:
    """This process's place among the ranks of one training."""

    def __init__(self, rank: int = 0, size: int = 1, comm=None):
        self.rank, self.size, self.comm = rank, size, comm
        self.phase = "setup"  # "setup" (errors are agreed on), "running", "done"
        self.seconds = 0.0  # spent in the allreduces of the steps (the benchmark reads it)
        self._stop = False  # whether any rank had been asked to stop, as of the last step

    @property
    def root(self) -> bool:
        return self.rank == 0

    def check_batch(self, batch: int, span: Span | None) -> None:
        if batch % self.size:
            raise DpError("value", f"batch {batch} does not divide among {self.size} "
                          f"processes", span,
                          (f"each process takes batch / {self.size} examples of every batch; "
                           f"give a batch that is a multiple of {self.size} (--set batch=...) "
                           f"or another number of processes",))

    def bounds(self, n: int, rank: int | None = None) -> tuple[int, int]:
        """This rank's (or `rank`'s) slice [lo, hi) of n examples (even when n does not
        divide: the last, partial batch of an epoch)."""
        rank = self.rank if rank is None else rank
        return n * rank // self.size, n * (rank + 1) // self.size

    def part(self, a):
        lo, hi = self.bounds(len(a))
        return a if self.size == 1 else a[lo:hi]

    def loss_and_grad(self, model, loss: str, xb, yb, key: tuple, stop) -> float:
        """The mean loss of the global batch (xb, yb), its gradient in `model.grad_flat` on
        every rank. Whether any rank had been asked to stop (`stop.requested`) travels with
        the loss, so that all stop after the same step (`stops`). Dropout's masks are keyed
        by the global index of each example: the key gains that of this rank's first one."""
        if self.size == 1:
            return model.loss_and_grad(loss, xb, yb, key=key)
        import numpy as np
        from mpi4py import MPI

        lo, hi = self.bounds(len(xb))
        weight = (hi - lo) / len(xb)
        grad = model.grad_flat
        if hi > lo:
            value = model.loss_and_grad(loss, xb[lo:hi], yb[lo:hi], key=key + (lo,))
            if weight != 1:
                grad *= np.float32(weight)
        else:  # a last batch of fewer examples than ranks
            value = 0.0
            grad.fill(0)
        began = time.perf_counter()
        self.comm.Allreduce(MPI.IN_PLACE, grad, op=MPI.SUM)
        sums = np.array([value * weight, float(stop.requested)])
        self.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        self.seconds += time.perf_counter() - began
        self._stop = bool(sums[1])
        return float(sums[0])

    def stops(self, stop) -> bool:
        """Whether to stop after this step: a signal asked this process (one process) or, as
        the last step's allreduce says, any rank."""
        return stop.requested if self.size == 1 else self._stop

    def mean(self, value: float, count: int) -> float:
        """The mean over all ranks of a mean of `count` examples on each."""
        if self.size == 1:
            return value
        total, n = self._sum([value * count if count else 0.0, count])
        return total / max(n, 1)

    def counts(self, *counts: int) -> tuple[int, ...]:
        if self.size == 1:
            return counts
        return tuple(int(c) for c in self._sum(counts))

    def _sum(self, values) -> list[float]:
        import numpy as np
        from mpi4py import MPI

        buf = np.array(values, dtype=np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return buf.tolist()

    def share(self, flat, state: dict, stream, run) -> None:
        """The end of the setup: every rank got through it (else all stop with the first
        failing rank's error), then rank 0's parameters, optimizer state, stream position and
        counters are every rank's."""
        if self.size == 1:
            self.phase = "running"
            return
        self.agree(None)
        self.comm.Bcast(flat, root=0)
        for name in sorted(state):
            self.comm.Bcast(state[name], root=0)
        stream_state, counters = self.comm.bcast(
            (stream.state(), dict(vars(run))) if self.root else None, root=0)
        if not self.root:
            stream.restore(*stream_state)
            vars(run).update(counters)
        self.phase = "running"

    def agree(self, err: DpError | None) -> None:
        """Every rank says whether its setup failed; if any did, every rank raises: rank 0
        the error of the first that failed, the others an error they do not print."""
        first = self._first(err)
        if first is None:
            return
        self.phase = "done"
        rank, agreed = first
        if rank != 0:
            agreed = agreed.with_note(f"met by process {rank} of {self.size}")
        agreed.settled, agreed.quiet = True, not self.root
        raise agreed

    def diagnosed(self, err: DpError | None, n: int) -> DpError | None:
        """Every rank's diagnosis of a step's non-finite value (`err`, None when its share of
        the n examples, run again, stayed finite), called by all at the same step: on every
        rank, the first rank's diagnosis, with a note naming that rank when it is not 0 (the
        positions it gives count from the rank's first example); None when none had one."""
        if self.size == 1:
            return err
        first = self._first(err)
        if first is None:
            return None
        rank, found = first
        if rank == 0:
            return found
        lo, hi = self.bounds(n, rank)
        return found.with_note(f"met by process {rank} of {self.size}, whose share of the "
                               f"batch is its examples {lo} to {hi - 1}: the positions "
                               f"above count from example {lo}")

    def _first(self, err: DpError | None) -> tuple[int, DpError] | None:
        """The first rank whose `err` is not None, and its error (on every rank)."""
        said = self.comm.allgather(None if err is None else
                                   (err.kind, err.message, err.span, err.notes, err.exit_code))
        for rank, e in enumerate(said):
            if e is not None:
                kind, message, span, notes, code = e
                first = DpError(kind, message, span, notes)
                first.exit_code = code
                return rank, first
        return None

    def settle(self, err: DpError) -> DpError | None:
        """What this rank prints of an error it stops with (None: nothing, rank 0 says it)."""
        if self.size == 1 or getattr(err, "settled", False):
            return None if getattr(err, "quiet", False) else err
        if self.phase == "setup":
            try:
                self.agree(err)
            except DpError as agreed:
                return None if agreed.quiet else agreed
        if self.phase == "running" and err.kind in _COLLECTIVE:
            self.phase = "done"
            return err if self.root else None
        return err  # this rank's own: `leave` ends the job

    def leave(self, code: int) -> int:
        """A rank that stops alone while the others may wait in a collective ends the job."""
        if self.size > 1 and code != 0 and self.phase != "done":
            sys.stdout.flush()
            sys.stderr.flush()
            self.comm.Abort(code)
        return code


WORLD = World()


def join() -> World:
    """The world of this process: under a launcher, MPI's (rank 0 alone keeps its standard
    output); else the world of one, without MPI. Called again, the same world."""
    global WORLD
    size = launched_size()
    if size == 1 or WORLD.size > 1:
        return WORLD
    try:
        from mpi4py import MPI
    except ImportError:
        err = _no_mpi(f"running as one of {size} processes" if size else "running under an "
                      "MPI launcher")
        err.quiet, err.settled = _env_rank() != 0, True
        raise err from None
    comm = MPI.COMM_WORLD
    if size is not None and comm.size != size:
        err = DpError("install", f"the launcher started {size} processes, but MPI sees "
                      f"{comm.size}", None, ("mpiexec and mpi4py use different MPI libraries: "
                                             "use the mpiexec of the MPI mpi4py was built "
                                             "with (the mpich wheel's, beside Python)",))
        err.quiet, err.settled = _env_rank() != 0, True
        raise err
    WORLD = World(comm.rank, comm.size, comm)
    if not WORLD.root:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    return WORLD


def settle(err: DpError) -> DpError | None:
    return WORLD.settle(err)


def leave(code: int) -> int:
    return WORLD.leave(code)


def root() -> bool:
    return WORLD.root


class NoLog:
    """The metrics file of a rank other than 0: rank 0 alone writes it."""

    def write(self, record: dict) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

"""What no machine can run, and inputs no parser should choke on, end in an error that says
so, fast: the memory pre-check (every buffer counted before any is allocated, sizes past 2^63
counted, never wrapped), an allocation that fails below the limit, nesting 10,000 deep, a
1,000-layer program, 10 MB of random bytes, text that is not UTF-8, an empty file.
`-k memory` runs the memory tests."""

from __future__ import annotations

import random
import resource
import subprocess
import sys
import time

import pytest
from conftest import dp_here

# --- memory -----------------------------------------------------------------------------------
HUGE_LAYER = """\
Net: R^64 -> R^10
Net(x) = FeedForward(FeedForward(FeedForward(x; m = 100000); m = 100000); m = 10)

train Net on digits(split = train):
  loss cross_entropy; optimizer sgd(lr = 0.1); batch 4096; epochs 1
"""

HUGE_LAYER_ERROR = """\
error[resource]: Net needs ≥ 37.3 GiB of buffers, more than the limit of 8 GiB: the parameter \
Net.feedforward2.W (in FeedForward) alone is 37.3 GiB (10,000,000,000 numbers)
  --> {file}:2:22
   |
 2 | Net(x) = FeedForward(FeedForward(FeedForward(x; m = 100000); m = 100000); m = 10)
   |                      ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
   = note: at batch 1: inputs 256 B, parameters 37.3 GiB, values computed 781 KiB
   = note: a smaller layer, batch or sequence needs less; on a machine with the memory, raise \
the limit with --max-memory SIZE (such as 32G)
"""

# the child's peak memory, as its parent sees it: a process of its own, so that no other
# child of the test process counts
PEAK = """\
import resource, subprocess, sys
proc = subprocess.run([sys.executable, "-m", "dp.interpreter.commands.cli", *sys.argv[1:]],
                      capture_output=True, text=True)
sys.stdout.write(f"{proc.returncode}\\n{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}"
                 f"\\n{proc.stderr}")
"""


def test_memory_a_huge_layer_fails_before_allocating(tmp_path):
    """A R^100000 -> R^100000 layer trained at batch 4096 (40 GB of weight alone) is refused
    at the layer before anything is allocated: the process never grows past 300 MB."""
    program = tmp_path / "huge.dp"
    program.write_text(HUGE_LAYER)
    out = subprocess.run([sys.executable, "-c", PEAK, "train", program], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path).stdout
    code, peak_kb, err = out.split("\n", 2)
    assert (int(code), err) == (1, HUGE_LAYER_ERROR.format(file=program))
    assert int(peak_kb) < 300 * 1024
    assert not (tmp_path / "huge.safetensors").exists()


def test_memory_sizes_past_2_to_the_63_are_counted_not_wrapped(write_program):
    path = write_program("Net: R^(4000000000, 4000000000, 4000000000) -> R^4\n"
                         "Net(x) = FeedForward(flatten(x); m = 4)\n")
    code, out, err = dp_here("check", path)
    assert (code, out) == (1, "")
    first = err.splitlines()[0]
    assert first == ("error[resource]: Net needs ≥ 1.28e+30 bytes of buffers, more than the "
                     "limit of 8 GiB: the parameter Net.feedforward.W (in FeedForward) alone "
                     "is 1.02e+30 bytes (2.56e+29 numbers: more than 2^63, which no array can "
                     "hold)")


def test_memory_a_sequence_whose_attention_passes_2_to_the_63_is_counted(write_program):
    """Found by the mutation fuzz: broadcasting in NumPy refused shapes past 2^63 while the
    plan was built, an error[internal] before the memory check could say what it is."""
    path = write_program("Reverse: Token[1]^8 -> Token[1]^9999999999\n"
                         "Reverse(ts) = SequenceToSequence(ts; d = 4, layers = 2, heads = 4, "
                         "ff = 8)\n")
    code, out, err = dp_here("check", path)
    assert code == 1 and out == ""
    assert err.startswith("error[resource]: Reverse needs ≥ ") and f"  --> {path}:2:15\n" in err


def test_memory_an_input_too_large_points_at_the_model(write_program):
    path = write_program("Net: (R^8)^1000000000 -> R^8\nNet(xs) = seq_mean(xs)\n")
    code, _, err = dp_here("check", path)
    assert code == 1
    assert err.splitlines()[:2] == [
        "error[resource]: Net needs ≥ 29.8 GiB of buffers, more than the limit of 8 GiB: the "
        "input [1, 1000000000, 8] alone is 29.8 GiB (8,000,000,000 numbers)",
        f"  --> {path}:2:1"]


CONV = """\
Net: R^(1, 64, 64) -> R^10
Net(x) =
  param W: R^(4096, 1, 3, 3) ~ glorot
  param b: R^4096 ~ zeros
  h = conv2d(x, W, b)
  FeedForward(global_avgpool2d(h); m = 10)
"""


def test_memory_max_memory_sets_the_limit_and_the_value_is_named(write_program):
    """Values count too: the 64 MiB of one conv2d's output pass a 10 MiB limit, at its line."""
    path = write_program(CONV)
    assert dp_here("check", path)[0] == 0
    code, _, err = dp_here("check", path, "--max-memory", "10M")
    assert code == 1
    assert err == f"""\
error[resource]: Net needs ≥ 64.3 MiB of buffers, more than the limit of 10 MiB: the value \
[1, 4096, 64, 64] of conv2d alone is 64 MiB (16,777,216 numbers)
  --> {path}:5:7
   |
 5 |   h = conv2d(x, W, b)
   |       ^^^^^^^^^^^^^^^
   = note: at batch 1: inputs 16 KiB, parameters 320 KiB, values computed 64 MiB
   = note: a smaller layer, batch or sequence needs less; on a machine with the memory, raise \
the limit with --max-memory SIZE (such as 32G)
"""
    assert dp_here("check", path)[0] == 0  # the limit was the command's only


@pytest.mark.parametrize("size", ["3X", "-1G", "0", "G"])
def test_memory_a_bad_max_memory_is_a_usage_error(write_program, size):
    code, _, err = dp_here("check", write_program(CONV), f"--max-memory={size}")
    assert code == 2
    assert err == (f"error[usage]: argument --max-memory: {size!r} is not a size: write bytes, "
                   "or a number with K, M, G or T (such as 3G) (see `dp --help`)\n")


def test_memory_max_memory_sizes():
    from dp.interpreter.core.memory import parse_size

    assert [parse_size(s) for s in ("1000", "3G", "3g", "3GB", "3GiB", "512M", "1.5K", "2T")] \
        == [1000, 3 * 2**30, 3 * 2**30, 3 * 2**30, 3 * 2**30, 512 * 2**20, 1536, 2 * 2**40]


ADAM = """\
Net: R^64 -> R^10
Net(x) = FeedForward(FeedForward(x; m = 40000); m = 10)

train Net on digits(split = train):
  loss cross_entropy; optimizer adam(lr = 0.001); batch 32; epochs 1
"""


def test_memory_training_counts_gradients_and_optimizer_state(tmp_path):
    """11.4 MiB of parameters run within 30 MiB; training them with adam (gradients, m and v:
    three more copies) does not, and is refused before the first step."""
    program = tmp_path / "adam.dp"
    program.write_text(ADAM)
    assert dp_here("check", program, "--max-memory", "30M")[0] == 0
    code, out, err = dp_here("train", program, "--max-memory", "30M", "--steps", "1")
    assert (code, out) == (1, "")
    assert err.splitlines()[0] == (
        "error[resource]: Net needs ≥ 50.7 MiB of buffers, more than the limit of 30 MiB: the "
        "parameter Net.feedforward1.W (in FeedForward) alone is 9.77 MiB (2,560,000 numbers)")
    assert err.splitlines()[5] == (
        "   = note: at batch 32: inputs 8 KiB, parameters 11.4 MiB, their gradients and "
        "optimizer state 34.3 MiB, values computed 4.88 MiB")
    assert not (tmp_path / "adam.safetensors").exists()
    code, out, _ = dp_here("train", program, "--max-memory", "100M", "--steps", "1")
    assert code == 0 and out.startswith("training Net")


WIDE = """\
Net: R^4 -> R^1000000
Net(x) = FeedForward(x; m = 1000000)

run:
  print time(Net, random(n = 512))
"""


def _capped(nbytes: int):
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))


def test_memory_an_allocation_that_fails_below_the_limit_names_the_layer(tmp_path):
    """Under a 1.5 GiB address-space limit, the 1.9 GiB output of a layer the pre-check lets
    through (8 GiB) cannot be allocated: an error at the layer with the bytes asked, exit 1,
    never an internal error."""
    program = tmp_path / "wide.dp"
    program.write_text(WIDE)
    proc = subprocess.run([sys.executable, "-m", "dp.interpreter.commands.cli", "run",
                           program], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, preexec_fn=_capped(3 * 2**29))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == f"""\
error[resource]: out of memory computing linear in FeedForward: 1.91 GiB ([512, 1000000] \
float32) could not be allocated
  --> {program}:2:10
   |
 2 | Net(x) = FeedForward(x; m = 1000000)
   |          ^^^^^^^^^^^^^^^^^^^^^^^^^^^
   = note: the buffers counted before running fit the limit of 8 GiB (--max-memory), but the \
machine, or a limit such as `ulimit -v`, has less to give; a smaller batch or layer needs less
"""


def test_memory_a_failed_allocation_of_a_gradient_names_its_step(monkeypatch):
    """The backward pass reports the step whose gradient could not be allocated."""
    import dataclasses

    import numpy as np
    from dp.dsl.errors import DpError
    from dp.dsl.loader import load_text
    from dp.interpreter.core.model import Model
    from dp.interpreter.core.primitives import PRIMITIVES

    def refuse(*args, **kwargs):
        raise MemoryError

    loss = PRIMITIVES["squared_error"]
    monkeypatch.setitem(PRIMITIVES, "squared_error", dataclasses.replace(loss, backward=refuse))
    model = Model(load_text("Net: R^4 -> R^3\nNet(x) = FeedForward(x; m = 3)\n", "n.dp"), "Net")
    with pytest.raises(DpError) as info:
        model.loss_and_grad("squared_error", np.ones((2, 4), np.float32),
                            np.ones((2, 3), np.float32))
    assert info.value.kind == "resource"
    assert info.value.message == ("out of memory computing the gradient of squared_error: "
                                  "8 B ([2] float32) could not be allocated")


# --- limits of the text ---------------------------------------------------------------------
HEAD = "Net: R^4 -> R^4\nNet(x) = "
DEEP = 10_000


def _quick(*args) -> tuple[int, str, str]:
    start = time.perf_counter()
    result = dp_here(*args)
    assert time.perf_counter() - start < 5
    return result


@pytest.mark.parametrize("opening, closing", [("(", ")"), ("relu(", ")")],
                         ids=["brackets", "calls"])
def test_nesting_10000_deep_is_a_limit_error_in_seconds(write_program, opening, closing):
    path = write_program(HEAD + opening * DEEP + "x" + closing * DEEP + "\n")
    code, out, err = _quick("check", path)
    assert (code, out) == (1, "")
    assert err.startswith("error[limit]: expression nested deeper than 1000 levels\n")
    assert "Recursion" not in err


def _chain(layers: int) -> str:
    lines = ["Net: R^8 -> R^8", "Net(x) ="]
    lines += [f"  h{i} = FeedForward({f'h{i - 1}' if i > 1 else 'x'}; m = 8)"
              for i in range(1, layers + 1)]
    return "\n".join(lines + [f"  h{layers}", "", "run:", "  print time(Net, random(n = 4))",
                              ""])


def test_a_1000_layer_program_runs_in_seconds(write_program):
    code, out, err = _quick("run", write_program(_chain(1000)))
    assert (code, err) == (0, "")
    assert "time(Net, random(n = 4)) = output [4, 8] (R^8 each)" in out


def test_1000_modules_each_calling_the_next_is_a_limit_error(write_program):
    lines = ["Net: R^8 -> R^8", "Net(x) = M1(x)"]
    for i in range(1, 1001):
        lines += [f"M{i}: R^8 -> R^8", f"M{i}(x) = " + (f"M{i + 1}(relu(x))" if i < 1000
                                                      else "relu(x)")]
    code, _, err = _quick("check", write_program("\n".join(lines) + "\n"))
    assert code == 1
    assert err.startswith("error[limit]: M200 is nested 201 modules deep here, more than the "
                          "limit of 200: Net -> M1 -> ... -> M199 -> M200\n")


def test_10_mb_of_random_bytes_is_a_syntax_error_with_its_offset(tmp_path):
    path = tmp_path / "noise.dp"
    data = bytearray(random.Random(0).randbytes(10 * 2**20))
    path.write_bytes(data)
    with pytest.raises(UnicodeDecodeError) as bad:
        data.decode("utf-8")
    code, _, err = _quick("check", path)
    assert code == 1
    assert err.startswith(f"error[syntax]: the file is not UTF-8 text (bad byte at offset "
                          f"{bad.value.start})\n")


def test_a_latin1_file_is_a_syntax_error_at_the_byte(tmp_path):
    path = tmp_path / "latin1.dp"
    path.write_bytes("# caf\u00e9\nNet: R^4 -> R^4\nNet(x) = x\n".encode("latin-1"))
    code, _, err = dp_here("check", path)
    assert code == 1
    assert err == (f"error[syntax]: the file is not UTF-8 text (bad byte at offset 5)\n"
                   f"  --> {path}:1:6\n")


# --- an empty file ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   \n# and another"],
                         ids=["empty", "blank", "comments"])
@pytest.mark.parametrize("command", ["check", "train", "run", "export"])
def test_an_empty_file_is_the_same_error_for_every_command(write_program, text, command):
    path = write_program(text)
    code, out, err = dp_here(command, path, *(["Net"] if command == "export" else []))
    assert (code, out) == (1, "")
    assert err == (f"error[file]: {path} is empty: it defines no module and has no train or "
                   "run block\n   = note: a program starts with a module's signature and "
                   "definition, such as Net: R^4 -> R^2\n")


def test_a_program_without_a_run_block_is_still_a_usage_error_for_dp_run(write_program):
    path = write_program("Net: R^4 -> R^4\nNet(x) = relu(x)\n")
    code, _, err = dp_here("run", path)
    assert code == 2
    assert err.startswith(f"error[usage]: {path} has no run block\n")

"""`captionkit sample`: reproducible random draws, option clashes refused, and quiet ends when the reader closes
the pipe."""
import subprocess
import sys

import pytest

from training_helpers import run_cli


def test_sample_command_draws_reproducibly(three_runs):
    first = run_cli("sample", three_runs[0], "--temperature", 1.5, "--top-k", 5, "--seed", 3, "--json")
    again = run_cli("sample", three_runs[0], "--temperature", 1.5, "--top-k", 5, "--seed", 3, "--json")
    assert first.exit_code == 0 and first.output == again.output
    clash = run_cli("sample", three_runs[0], "--temperature", 1.5, "--beam", 3)
    assert clash.exit_code == 2 and "use one or the other" in clash.output


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly(three_runs):
    command = [sys.executable, "-c", "from captionkit.cli import main; main()", "sample", str(three_runs[0]),
               "--n", "6"]
    producer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    producer.stdout.readline()
    producer.stdout.close()  # `| head -1`
    _, err = producer.communicate(timeout=60)
    # stderr holds only the line naming the checkpoint used
    assert producer.returncode == 0 and err.startswith(b"using ") and err.count(b"\n") == 1 and err.endswith(b"\n")

"""`captionkit info`: what the CPU offers, where the products run and on how many threads, checked against
/proc/cpuinfo's flags (Linux) and the kernels' own answers."""
import os
import subprocess
import sys

import pytest

from captionkit import cpu, kernels
from training_helpers import run_cli


def lines_of(output):
    """{label: rest} of each `label: rest` line; repeated labels (BLAS loaded) keep a list."""
    found = {}
    for line in output.splitlines():
        label, _, rest = line.partition(": ")
        found.setdefault(label, []).append(rest)
    return found


def test_info_names_the_cpu_its_instruction_sets_and_the_kernels():
    result = run_cli("info")
    assert result.exit_code == 0, result.output
    found = lines_of(result.output)
    features = cpu.cpu_features()
    assert result.output.splitlines()[0].endswith(f" on {features.name}")
    assert found[f"instruction sets ({features.source})"] == [features.describe()]
    if not kernels.is_available():
        assert "compiled kernels: not built" in result.output
        return
    assert found["kernels' BLAS"] == [kernels.blas()]
    assert found["bfloat16 products"][0].startswith("yes, " if kernels.bf16_available() else "no, ")
    assert found["threads"][0].split()[0].isdigit()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/cpuinfo is Linux's")
def test_info_says_what_linux_lists():
    result = run_cli("info")
    flags = cpu.cpuinfo_flags("/proc/cpuinfo")[1]
    sets = [line for line in result.output.splitlines() if line.startswith("instruction sets")][0]
    for name, flag in (("AVX2", "avx2"), ("AVX-512F", "avx512f"), ("AVX512-BF16", "avx512_bf16")):
        assert f"{name} {'yes' if flag in flags else 'no'}" in sets
    if kernels.is_available():
        bf16 = [line for line in result.output.splitlines() if line.startswith("bfloat16 products")][0]
        assert bf16.startswith("bfloat16 products: yes" if "avx512_bf16" in flags else "bfloat16 products: no")


@pytest.mark.slow
def test_info_reports_the_thread_setting_of_the_environment():
    if not kernels.is_available():
        pytest.skip("the compiled kernels are not built")
    command = [sys.executable, "-c", "from captionkit.cli import main; main(prog_name='captionkit')", "info"]
    env = {**os.environ, "CAPTIONKIT_NUM_THREADS": "3"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "threads: 3 (set by CAPTIONKIT_NUM_THREADS)" in done.stdout
    env["CAPTIONKIT_NUM_THREADS"] = "many"
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "Error: CAPTIONKIT_NUM_THREADS must be a positive integer, got 'many'" in done.stderr

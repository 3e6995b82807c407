"""`captionkit info`: what this CPU offers the compiled kernels, which product kernels run, on how many threads."""
import os

import click

from captionkit import __version__, parallel
from captionkit.cpu import cpu_features, product_kernels
from captionkit.kernels import blas_threads


def _threads_line():
    count = parallel.get_num_threads()
    if os.environ.get("CAPTIONKIT_NUM_THREADS") is not None:
        origin = "set by CAPTIONKIT_NUM_THREADS"
    elif blas_threads() is not None:
        origin = ("the kernels' OpenBLAS setting: OPENBLAS_NUM_THREADS, OMP_NUM_THREADS or the cores this process "
                  "may use; CAPTIONKIT_NUM_THREADS overrides it")
    else:
        origin = "scipy's BLAS, whose threads captionkit does not set, keeps its own"
    return f"{count} ({origin})"


def _loaded_blas_lines():
    """Each BLAS library in this process as threadpoolctl sees it (numpy's and the kernels' own), or why not."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["not listed: threadpoolctl is not installed (`pip install threadpoolctl` lists each BLAS's kernels)"]
    lines = []
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            core = lib.get("architecture") or "kernel set not reported"
            lines.append(f"{lib.get('internal_api')} {lib.get('version')}, {core} kernels, threads set to "
                         f"{lib.get('num_threads')} ({lib.get('filepath')})")
    return lines or ["none found"]


@click.command("info")
def info():
    """Show what this CPU offers (AVX2, AVX-512F, AVX512-BF16, AMX-BF16), where the compiled kernels' matrix
    products run (captionkit's packed panels or BLAS, and which BLAS), the thread setting, and whether bfloat16
    products are available.

    Paste its output into a bug report about speed: it is what the benchmarks' tables name.
    """
    features = cpu_features()
    click.echo(f"captionkit {__version__} on {features.name}")
    click.echo(f"instruction sets ({features.source}): {features.describe()}")
    kernels = product_kernels()
    if kernels is None:
        click.echo("compiled kernels: not built (the numpy reference runs; `pip install .` with a C compiler "
                   "builds them)")
        return
    click.echo(f"float32 products: time steps on {_where(kernels.step)}, the others on {_where(kernels.large)}")
    click.echo(f"kernels' BLAS: {kernels.blas}")
    click.echo(f"bfloat16 products: {'yes' if kernels.bf16 else 'no'}, {kernels.bf16_reason}")
    click.echo(f"threads: {_threads_line()}")
    for line in _loaded_blas_lines():
        click.echo(f"BLAS loaded: {line}")


def _where(path):
    return "captionkit's packed AVX-512 panels" if path == "panels" else "BLAS"

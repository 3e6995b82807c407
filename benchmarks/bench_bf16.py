"""bfloat16 on this CPU (issue 25), in three parts, each runnable alone (``--parts``; default: products):

    python benchmarks/bench_bf16.py                                   # products, every implementation installed
    python benchmarks/bench_bf16.py --parts products --threads 1 --rounds 9
    python benchmarks/bench_bf16.py --parts steps --cells lstm --rounds 8 --block 3
    python benchmarks/bench_bf16.py --parts convergence --runs runs/bf16 --figure docs/bf16_convergence.png
    python benchmarks/bench_bf16.py --parts convergence --runs runs/bf16 --cells rnn gru --seeds 0

A header names the CPU, the instruction sets it runs (captionkit.cpu), the kernels' BLAS and the chip's bf16 and
float32 peak, measured (below).

``products``: matrix products, captionkit's vdpbf16ps kernel against oneDNN's bf16 matmul (what PyTorch calls),
torch's bf16 matmul, and the float32 products captionkit runs in float32, on the skinny shapes of a step, at each
of ``--threads``.

``steps``: what users run, at the seed sizes (T=16, D=512, W=256, H=512, V=1004), on ``--step-threads`` threads
(default 2), for each of ``--cells``: a train step at each N of ``--batches`` (default 50 and 200; loss,
gradients and Adam, as benchmarks/_steps.py builds it for captionkit and PyTorch) and greedy decoding of 50
captions x 30 steps. Four implementations, each in its own worker process (benchmarks/_harness.py), timed in
interleaved rounds: captionkit ``precision="fp32"`` and ``precision="bf16"`` (the compiled backend), PyTorch's
nn.Embedding + nn.Linear + nn.RNN/LSTM/GRU + nn.Linear in float32 and inside
``torch.autocast("cpu", dtype=torch.bfloat16)`` (forward and loss; backward and Adam after it, as PyTorch's recipe
has it), when torch is installed (``pip install torch==2.13.0``). A speed-up is the median over rounds of the ratio
of the two per-round medians, so both sides of it saw the same load. GFLOP/s and the share of the bf16 peak count
the matrix products of the step (benchmarks/bench_cells.py's count), every one of which runs on bfloat16 inputs
under ``precision="bf16"`` (on the default kernel: AMX tiles where the CPU has them), against the measured per-core
bf16 peak times the threads. The issue's targets, on a CPU with
AMX: train steps at least 1.3x torch.autocast, greedy at least 1.5x; without AMX the table is reported.

``convergence``: ``captionkit train --cell CELL --precision P --seed S`` (the default run otherwise: the built-in
dataset, its sizes, epochs and validation) for each of ``--cells`` (default lstm), fp32 and bf16, each of ``--seeds``
(default 0 1 2), ``--jobs`` runs at a time, into ``--runs`` (a finished run found there is reused, an interrupted one
resumed). Printed: each run's last validation (CIDEr-D, the run's own evaluation, and validation loss) at equal
iterations, the median over seeds per precision and bf16's relative gap (the issue's target: bf16 within 2% of
fp32); drawn: the runs' loss and CIDEr-D curves (``captionkit compare``'s plot) into ``--figure``.

The products part in detail. oneDNN comes from the pip package ``onednn`` (``pip install onednn==2026.1.0``:
libdnnl and its TBB runtime, called here through its C API with ctypes; nothing in captionkit uses it), torch when
installed (``pip install torch==2.13.0``). Each implementation runs in its own worker process; the driver asks
them in turn, shape by shape, in rotating order, ``--rounds`` rounds of ``--block`` calls each, so that load from
elsewhere falls on all alike. A figure is the median over all calls; a ratio the median over rounds of the ratio of
the two round medians.

What is timed, per call, C (m, n) = A (m, k) @ B (k, n):
- ``sgemm OpenBLAS``: float32, ``kernels.affine_forward`` on the kernels' OpenBLAS (a zero bias added).
- ``sgemm panels``: float32, the same on captionkit's packed AVX-512 panels, packing B included (a time loop packs
  its matrix once per sequence instead).
- ``bf16 captionkit amx`` and ``bf16 captionkit vdpbf16ps``: ``kernels.bf16_matmul`` on each of captionkit's bf16
  kernels this CPU runs (AMX tiles; AVX512-BF16), B packed beforehand (``bf16_pack``, once per update for a
  weight); rounding A to bf16 is included. ``pack`` is ``bf16_pack`` alone (time, not GFLOP/s).
- ``bf16 oneDNN``: a matmul primitive, bf16 A and B, float32 C, B reordered once to the layout oneDNN picks;
  converting A to bf16 is not included.
- ``bf16 torch``: ``torch.matmul`` on bf16 tensors (its result is bf16, as under autocast); converting A not included.

With 2 threads, captionkit's products run as the model runs them: the rows cut in 2 shards on captionkit.parallel's
threads (the shards' results not joined); oneDNN and torch run each product on 2 threads.

The chip's peak: register-only loops of independent vdpbf16ps, of float32 FMAs and, where the CPU has AMX, of
tdpbf16ps on six accumulator tiles, compiled here with the system C compiler, on one core: instructions per ns,
times the flops of one (vdpbf16ps on 512 bits: 16 lanes x 2 products x 2 flops = 64; an FMA: 16 x 2 = 32; a
tdpbf16ps: 16 x 16 outputs x 32 products x 2 = 16384), times the threads. The bf16 peak the shares are of is the
faster bf16 instruction's (tdpbf16ps where there is AMX). It needs ``cc``; without one the fractions are left out.
"""
import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _harness import ratio, serve, time_interleaved, torch_installed, worker_env  # noqa: E402
from _steps import (MAX_LENGTH, TORCH_MODULES, D, H, T, V, W, captionkit_model, captionkit_train_step,  # noqa: E402
                    make_batch, torch_greedy, torch_model, torch_train_step)
from bench_cells import flops  # noqa: E402
from captionkit.kernels import BF16_KERNELS  # noqa: E402

PARTS = ("products", "steps", "convergence")

# name: (m, n, k); the step products are a time step's h Wh of each cell at H = 512 (4H for lstm, 3H for gru)
SHAPES = {
    "input 50x2048x512": (50, 2048, 512),
    "backward dh 50x512x2048": (50, 512, 2048),
    "output layer 800x1004x512": (800, 1004, 512),
    "input 200x2048x512": (200, 2048, 512),
    "rnn step N=50 50x512x512": (50, 512, 512),
    "rnn step N=200 200x512x512": (200, 512, 512),
    "lstm step N=50 50x2048x512": (50, 2048, 512),
    "lstm step N=200 200x2048x512": (200, 2048, 512),
    "gru step N=50 50x1536x512": (50, 1536, 512),
    "gru step N=200 200x1536x512": (200, 1536, 512),
}
# captionkit's bf16 products on each of its kernels ("bf16 captionkit KERNEL"; kernels.bf16_kernels() says which
# this CPU runs), its float32 products on both paths, and packing alone.
CAPTIONKIT = (["sgemm OpenBLAS", "sgemm panels"] + [f"bf16 captionkit {kernel}" for kernel in BF16_KERNELS]
              + ["pack"])
IMPLEMENTATIONS = CAPTIONKIT + ["bf16 oneDNN", "bf16 torch"]


def inputs(m, n, k):
    rng = np.random.default_rng(m * n + k)
    return rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)


def scaled_error(c, a, b):
    """max |c - the emulated bf16 product| / (|round(a)| @ |round(b)|): ~1e-7 for a bf16 product with float32 sums,
    ~1e-3 for one that rounds its result to bf16 or does not round its inputs."""
    from captionkit import precision

    ra, rb = precision.round_to_bf16(a), precision.round_to_bf16(b)
    scale = np.abs(ra).astype(np.float64) @ np.abs(rb).astype(np.float64)
    return float(np.max(np.abs(np.asarray(c, np.float64) - precision.bf16_matmul_reference(a, b)) / scale))


# ---------------------------------------------------------------------- captionkit's products


def captionkit_calls(name, threads):
    """{shape: (call, result)} for one of captionkit's implementations, on ``threads`` shards."""
    from captionkit import kernels, parallel
    from captionkit._ext import _blas

    parallel.set_num_threads(threads)
    if name.startswith("sgemm"):
        _blas.use_panel(True, name == "sgemm panels")
    calls = {}
    for shape, (m, n, k) in SHAPES.items():
        a, b = inputs(m, n, k)
        if name == "pack":
            calls[shape] = (lambda b=b: kernels.bf16_pack(b), None)
            continue
        if name.startswith("bf16 captionkit"):
            kernels.use_bf16_kernel(name.split()[-1])
            packed = kernels.bf16_pack(b)
            product = (lambda rows, a=a, packed=packed: kernels.bf16_matmul(a[rows], packed))  # noqa: E731
        else:
            bias = np.zeros(n, np.float32)
            product = (lambda rows, a=a, b=b, bias=bias: kernels.affine_forward(a[rows], b, bias)[0])  # noqa: E731
        call = (lambda product=product, m=m: parallel.map_shards(m, product)) if threads > 1 else \
            (lambda product=product: product(slice(None)))
        calls[shape] = (call, lambda product=product: product(slice(None)))
    return calls


# ---------------------------------------------------------------------- oneDNN through its C API

_DNNL_CPU, _DNNL_STREAM_IN_ORDER = 1, 1
_DNNL_BF16, _DNNL_F32 = 2, 3
_DNNL_TAG_ANY, _DNNL_TAG_AB = 1, 3
_DNNL_QUERY_WEIGHTS_MD, _DNNL_QUERY_IMPL_INFO_STR = 131, 8
_DNNL_ARG_SRC, _DNNL_ARG_DST, _DNNL_ARG_WEIGHTS = 1, 17, 33


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


def _onednn_library():
    """libdnnl from the onednn wheel (installed into the environment's lib/), loaded with its TBB beside it."""
    path = os.path.join(sys.prefix, "lib", "libdnnl.so.3")
    if not os.path.exists(path):
        return None
    lib = ctypes.CDLL(path)
    lib.dnnl_primitive_desc_query_md.restype = ctypes.c_void_p
    return lib


class OneDnnMatmul:
    """C (m, n) float32 = A (m, k) bf16 @ B (k, n) bf16 as one oneDNN matmul primitive."""

    def __init__(self, lib, engine, stream, a, b):
        self.lib, self.stream = lib, stream
        m, k = a.shape
        n = b.shape[1]
        from captionkit import precision

        self.a_bits = precision.bf16_bits(a)  # bf16 A, converted once (not timed)
        b_bits = precision.bf16_bits(b)
        self.c = np.zeros((m, n), np.float32)

        def desc(rows, cols, dtype, tag):
            md = ctypes.c_void_p()
            self._check(lib.dnnl_memory_desc_create_with_tag(ctypes.byref(md), 2, (ctypes.c_int64 * 2)(rows, cols),
                                                             dtype, tag), "memory_desc_create_with_tag")
            return md

        src, wei_any = desc(m, k, _DNNL_BF16, _DNNL_TAG_AB), desc(k, n, _DNNL_BF16, _DNNL_TAG_ANY)
        wei_plain, dst = desc(k, n, _DNNL_BF16, _DNNL_TAG_AB), desc(m, n, _DNNL_F32, _DNNL_TAG_AB)
        pd = ctypes.c_void_p()
        self._check(lib.dnnl_matmul_primitive_desc_create(ctypes.byref(pd), engine, src, wei_any, None, dst, None),
                    "matmul_primitive_desc_create")
        info = ctypes.c_char_p()
        lib.dnnl_primitive_desc_query(pd, _DNNL_QUERY_IMPL_INFO_STR, 0, ctypes.byref(info))
        self.implementation = info.value.decode()
        wei_chosen = ctypes.c_void_p(lib.dnnl_primitive_desc_query_md(pd, _DNNL_QUERY_WEIGHTS_MD, 0))
        self.primitive = ctypes.c_void_p()
        self._check(lib.dnnl_primitive_create(ctypes.byref(self.primitive), pd), "primitive_create")

        def memory(md, array):
            mem = ctypes.c_void_p()
            # DNNL_MEMORY_ALLOCATE (all bits set) asks oneDNN to allocate the buffer itself
            handle = ctypes.c_void_p(array.ctypes.data) if array is not None else ctypes.c_void_p(2**64 - 1)
            self._check(lib.dnnl_memory_create(ctypes.byref(mem), md, engine, handle), "memory_create")
            return mem

        plain = memory(wei_plain, b_bits)
        self.weights = memory(wei_chosen, None)  # B once in oneDNN's own layout, as packing is for captionkit
        rpd, reorder = ctypes.c_void_p(), ctypes.c_void_p()
        self._check(lib.dnnl_reorder_primitive_desc_create(ctypes.byref(rpd), wei_plain, engine, wei_chosen, engine,
                                                           None), "reorder_primitive_desc_create")
        self._check(lib.dnnl_primitive_create(ctypes.byref(reorder), rpd), "primitive_create (reorder)")
        args = (_ExecArg * 2)((_DNNL_ARG_SRC, plain), (_DNNL_ARG_DST, self.weights))
        self._check(lib.dnnl_primitive_execute(reorder, stream, 2, args), "reorder")
        self._check(lib.dnnl_stream_wait(stream), "stream_wait")
        self.args = (_ExecArg * 3)((_DNNL_ARG_SRC, memory(src, self.a_bits)), (_DNNL_ARG_WEIGHTS, self.weights),
                                   (_DNNL_ARG_DST, memory(dst, self.c)))

    @staticmethod
    def _check(status, what):
        if status != 0:
            raise RuntimeError(f"oneDNN {what} failed with status {status}")

    def __call__(self):
        self._check(self.lib.dnnl_primitive_execute(self.primitive, self.stream, 3, self.args), "matmul")
        self._check(self.lib.dnnl_stream_wait(self.stream), "stream_wait")
        return self.c


def onednn_calls(threads):
    # oneDNN's TBB runtime takes as many threads as the cores this process may run on, fixed when it starts.
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    lib = _onednn_library()
    engine, stream = ctypes.c_void_p(), ctypes.c_void_p()
    OneDnnMatmul._check(lib.dnnl_engine_create(ctypes.byref(engine), _DNNL_CPU, 0), "engine_create")
    OneDnnMatmul._check(lib.dnnl_stream_create(ctypes.byref(stream), engine, _DNNL_STREAM_IN_ORDER), "stream_create")
    calls, implementations = {}, {}
    for shape, (m, n, k) in SHAPES.items():
        matmul = OneDnnMatmul(lib, engine, stream, *inputs(m, n, k))
        calls[shape] = (matmul, matmul)
        implementations[shape] = matmul.implementation
    version = lib.dnnl_version
    version.restype = ctypes.POINTER(ctypes.c_int * 3)
    v = version().contents
    return calls, {"version": f"oneDNN {v[0]}.{v[1]}.{v[2]}", "kernels": sorted(set(implementations.values()))}


def torch_calls(threads):
    import torch

    torch.set_num_threads(threads)
    calls = {}
    for shape, (m, n, k) in SHAPES.items():
        a, b = (torch.from_numpy(x).to(torch.bfloat16) for x in inputs(m, n, k))
        call = (lambda a=a, b=b: torch.matmul(a, b))  # noqa: E731
        calls[shape] = (call, lambda call=call: call().float().numpy())
    return calls, {"version": f"torch {torch.__version__}"}


# ---------------------------------------------------------------------- products: worker and driver


def product_worker(name, threads):
    """Answer ``shape count`` lines with the times of ``count`` calls; first a line with what it runs."""
    hello = {}
    if name == "bf16 oneDNN":
        calls, hello = onednn_calls(threads)
    elif name == "bf16 torch":
        calls, hello = torch_calls(threads)
    else:
        from captionkit import kernels

        calls = captionkit_calls(name, threads)
        version = kernels.blas() if name.startswith("sgemm") else f"captionkit's {kernels.bf16_kernel()} kernel"
        hello = {"version": version}
    errors = {}
    for shape, (call, result) in calls.items():
        for _ in range(3):  # warm-up
            call()
        if result is not None:
            errors[shape] = scaled_error(result(), *inputs(*SHAPES[shape]))
    print(json.dumps({"ready": True, "errors": errors, **hello}), flush=True)
    for line in sys.stdin:
        shape, count = json.loads(line)
        call = calls[shape][0]
        times = []
        for _ in range(count):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        print(json.dumps(times), flush=True)


_PEAK_PROBE = r"""
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef PROBE_AMX
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
/* tdpbf16ps per second into six independent accumulator tiles (a tile product takes 16 cycles to issue and longer
 * to finish); 0 where the CPU or the OS has no AMX-BF16. With `stream` bytes > 0, the products of captionkit's AMX
 * kernel instead: four accumulators fed per step by two tiles of A from a 2 KB buffer (in L1) and two tiles of B
 * read in order from a buffer of `stream` bytes, as a packed weight streams past a block of rows. */
static int amx_ready(void) {
#ifdef PROBE_AMX
    unsigned int a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d >> 22 & 1) || !(d >> 24 & 1)
        || syscall(SYS_arch_prctl, 0x1023, 18) != 0)
        return 0;
    struct { uint8_t palette, start_row, reserved[14]; uint16_t bytes[16]; uint8_t rows[16]; } config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int i = 0; i < 8; i++) { config.rows[i] = 16; config.bytes[i] = 64; }
    __asm__ volatile("ldtilecfg %0" : : "m"(config)); /* not _tile_loadconfig: GCC 12's reads 8 bytes, see _bf16.h */
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3); _tile_zero(4); _tile_zero(5); _tile_zero(6);
    _tile_zero(7);
    return 1;
#else
    return 0;
#endif
}
static double amx_rate(long stream) {
#ifdef PROBE_AMX
    double rate, t;
    if (stream == 0) {
        long n = 2000000; t = now();
        for (long it = 0; it < n; it++) {
            _tile_dpbf16ps(0, 6, 7); _tile_dpbf16ps(1, 6, 7); _tile_dpbf16ps(2, 6, 7);
            _tile_dpbf16ps(3, 6, 7); _tile_dpbf16ps(4, 6, 7); _tile_dpbf16ps(5, 6, 7);
        }
        return n * 6.0 / (now() - t);
    }
    uint8_t *b = aligned_alloc(64, stream), *a = aligned_alloc(64, 2048);
    memset(b, 0, stream); memset(a, 0, 2048);
    long steps = stream / 2048, reps = 400000000 / stream + 2;
    t = now();
    for (long r = 0; r < reps; r++)
        for (long s = 0; s < steps; s++) {
            const uint8_t *tiles = b + s * 2048;
            _tile_loadd(6, tiles, 128); _tile_loadd(4, a, 64); _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, tiles + 64, 128); _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(5, a + 1024, 64); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
        }
    rate = reps * steps * 4.0 / (now() - t);
    free(a); free(b);
    return rate;
#else
    return 0;
#endif
}
int main(void) {
    __m512 acc[24]; __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_setzero_si512();
    __m512 f[24], u = _mm512_set1_ps(1.0f), v = _mm512_setzero_ps();
    for (int i = 0; i < 24; i++) acc[i] = f[i] = _mm512_setzero_ps();
    long n = 20000000; double t = now();
    for (long it = 0; it < n; it++) {
        _Pragma("GCC unroll 24") for (int i = 0; i < 24; i++) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
        __asm__ volatile("" : "+v"(x));
    }
    double bf16 = n * 24.0 / (now() - t); t = now();
    for (long it = 0; it < n; it++) {
        _Pragma("GCC unroll 24") for (int i = 0; i < 24; i++) f[i] = _mm512_fmadd_ps(u, v, f[i]);
        __asm__ volatile("" : "+v"(u));
    }
    double fma = n * 24.0 / (now() - t); float s = 0;
    for (int i = 0; i < 24; i++) s += _mm512_reduce_add_ps(acc[i]) + _mm512_reduce_add_ps(f[i]);
    printf("%g %g", bf16, fma);
    int amx = amx_ready();
    long streams[] = {0, 32 << 10, 512 << 10, 2 << 20, 8 << 20};
    for (int i = 0; i < 5; i++) printf(" %g", amx ? amx_rate(streams[i]) : 0.0);
    printf(" %g\n", s);
    return 0;
}
"""
# flops of one instruction: vdpbf16ps on 512 bits (16 lanes x 2 products x 2), a 512-bit float32 FMA (16 x 2), a
# tdpbf16ps on full tiles (16 x 16 outputs x 32 products x 2)
FLOPS_PER = {"vdpbf16ps": 64, "fma": 32, "tdpbf16ps": 16 * 16 * 32 * 2}


# the tdpbf16ps rates measured with B streaming from buffers of these sizes (the probe's `streams`)
STREAMS = ("32 KB", "512 KB", "2 MB", "8 MB")


def peak_per_core():
    """{"vdpbf16ps", "fma", "tdpbf16ps", and "tdpbf16ps B from SIZE" per STREAMS}: instructions per second on one
    core, best of 3 runs (the tdpbf16ps rates 0 without AMX, or where the compiler cannot target it); None without
    a C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        source, binary = os.path.join(tmp, "peak.c"), os.path.join(tmp, "peak")
        with open(source, "w") as f:
            f.write(_PEAK_PROBE)
        flags = ["-O2", "-mavx512f", "-mavx512bf16", source, "-o", binary]
        if subprocess.run([compiler, "-DPROBE_AMX", "-mamx-tile", "-mamx-bf16"] + flags).returncode != 0:
            subprocess.run([compiler] + flags, check=True)
        core = sorted(os.sched_getaffinity(0))[:1]
        runs = [subprocess.run([binary], capture_output=True, text=True, check=True,
                               preexec_fn=lambda: os.sched_setaffinity(0, core)).stdout.split() for _ in range(3)]
    names = ["vdpbf16ps", "fma", "tdpbf16ps"] + [f"tdpbf16ps B from {size}" for size in STREAMS]
    return {name: max(float(r[i]) for r in runs) for i, name in enumerate(names)}


def available_implementations():
    from captionkit import kernels

    names = [name for name in CAPTIONKIT if not name.startswith("bf16 captionkit")
             or name.split()[-1] in kernels.bf16_kernels()]
    if os.path.exists(os.path.join(sys.prefix, "lib", "libdnnl.so.3")):
        names.append("bf16 oneDNN")
    else:
        print("oneDNN: not installed (pip install onednn==2026.1.0); its column is left out", file=sys.stderr)
    if torch_installed():
        names.append("bf16 torch")
    return names


def measure(threads, rounds, block):
    """{name: {"hello": ..., "times": {shape: [...]}, "rounds": {shape: [round medians]}}} for ``threads``."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CAPTIONKIT_NUM_THREADS"):
        env[var] = str(threads)
    lib_dir = os.path.join(sys.prefix, "lib")
    env["LD_LIBRARY_PATH"] = lib_dir + os.pathsep + env.get("LD_LIBRARY_PATH", "")  # oneDNN's TBB and runtime
    # The onednn wheel is a SYCL build: its CPU engine is the OpenCL CPU device of intel-opencl-rt, whose ICD file
    # names the path it was built at, so the OpenCL loader is pointed at the library itself.
    env["OCL_ICD_FILENAMES"] = os.path.join(lib_dir, "libintelocl.so")
    names = available_implementations()
    workers, records = {}, {}
    for name in names:
        argv = [sys.executable, os.path.abspath(__file__), "--worker", name, "--threads", str(threads)]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        workers[name] = proc
        records[name] = {"hello": json.loads(proc.stdout.readline()), "times": {}, "rounds": {}}
    for r in range(rounds):
        for shape in SHAPES:
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                proc = workers[name]
                proc.stdin.write(json.dumps([shape, block]) + "\n")
                proc.stdin.flush()
                times = json.loads(proc.stdout.readline())
                records[name]["times"].setdefault(shape, []).extend(times)
                records[name]["rounds"].setdefault(shape, []).append(float(np.median(times)))
    for proc in workers.values():
        proc.stdin.close()
        proc.wait()
    return records


def report(threads, records, peak):
    names = [n for n in IMPLEMENTATIONS if n in records and n != "pack"]
    products = [n for n in names if n.startswith("bf16")]
    print(f"\n### products, {threads} thread{'s' if threads > 1 else ''}\n")
    mine = next(n for n in products if n.startswith("bf16 captionkit"))  # the default kernel: the fastest there is
    ratios = [(mine, other) for other in ("bf16 oneDNN", "bf16 torch", "sgemm OpenBLAS") if other in records]
    header = ["product (m x n x k)"] + [f"{n} GFLOP/s" for n in names] + ["pack (ms)"]
    header += [f"captionkit {mine.split()[-1]} / {other.split()[-1]}" for _, other in ratios]
    if peak:
        header += [f"{n.replace('bf16 ', '')} % of bf16 peak" for n in products]
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for shape, (m, n, k) in SHAPES.items():
        flops = 2 * m * n * k
        gflops = {name: flops / np.median(records[name]["times"][shape]) / 1e9 for name in names}
        row = [shape] + [f"{gflops[name]:.0f}" for name in names]
        row.append(f"{1e3 * np.median(records['pack']['times'][shape]):.3f}")
        for mine, other in ratios:  # speed ratio: other's time / mine, per round, median over rounds
            per_round = np.array(records[other]["rounds"][shape]) / np.array(records[mine]["rounds"][shape])
            row.append(f"{np.median(per_round):.2f}")
        if peak:
            row += [f"{100 * gflops[name] / (peak * threads):.0f}" for name in products]
        print("| " + " | ".join(row) + " |")
    print()
    for name in names:
        hello = records[name]["hello"]
        worst = max(hello["errors"].values())
        extra = f"; kernels {', '.join(hello['kernels'])}" if "kernels" in hello else ""
        print(f"- {name}: {hello['version']}{extra}; largest error against the emulated bf16 product, relative to "
              f"|A||B|: {worst:.1e}")


def products(args, peak):
    for threads in args.threads:
        report(threads, measure(threads, args.rounds, args.block), peak)


# ---------------------------------------------------------------------- steps: train steps and greedy decoding

STEP_IMPLEMENTATIONS = ("captionkit fp32", "captionkit bf16", "torch fp32", "torch autocast")
GREEDY_CAPTIONS = 50


def step_runner(implementation, cell_type, task, N, threads):
    """The timed call of one implementation: a train step on a batch of N, or greedy decoding of N captions."""
    features, captions = make_batch(N, np.random.RandomState(0))
    if implementation.startswith("torch"):
        modules, initial = torch_model(cell_type, threads)
        autocast = implementation == "torch autocast"
        if task == "greedy":
            return torch_greedy(modules, initial, features, autocast=autocast)
        return torch_train_step(modules, initial, features, captions, autocast=autocast)
    model = captionkit_model(cell_type, "cython", precision=implementation.split()[-1])
    if task == "greedy":
        return lambda: model.sample(features, max_length=MAX_LENGTH)
    return captionkit_train_step(model, features, captions)


def step_worker(implementation, cell_type, task, N, threads, warmup):
    serve(step_runner(implementation, cell_type, task, N, threads), warmup)


def steps(args, peak):
    """Print the steps table: per cell and task, each implementation's median time, captionkit bf16's speed-ups
    over torch.autocast and over captionkit fp32, and the share of the bf16 peak."""
    implementations = [i for i in STEP_IMPLEMENTATIONS if not i.startswith("torch") or torch_installed()]
    with_torch = "torch autocast" in implementations
    threads = args.step_threads
    print(f"\n### steps, {threads} thread{'s' if threads > 1 else ''}\n")
    print(f"T={T} D={D} W={W} H={H} V={V}, float32 parameters; median of {args.rounds} rounds x {args.block} "
          f"iterations after {args.warmup} warm-up, interleaved")
    if with_torch:
        import torch

        print(f"torch {torch.__version__}: nn.Embedding + nn.Linear + nn.RNN/LSTM/GRU + nn.Linear, torch.optim.Adam; "
              'autocast: torch.autocast("cpu", dtype=torch.bfloat16) around the forward and the loss')
    else:
        print("torch is not installed: its columns are left out (pip install torch==2.13.0)")
    print()
    header = ["cell", "task (GFLOP)"] + [f"{impl} ms" for impl in implementations]
    header += ["captionkit bf16 speed-up over fp32"]
    if with_torch:
        header += ["captionkit bf16 speed-up over autocast"]
    header += ["captionkit bf16 GFLOP/s"]
    if peak:
        header += ["captionkit bf16 % of bf16 peak"] + (["autocast % of bf16 peak"] if with_torch else [])
    print("| " + " | ".join(header) + " |")
    print("|---|---|" + "---:|" * (len(header) - 2))
    tasks = [("train", N) for N in args.batches] + [("greedy", GREEDY_CAPTIONS)]
    for cell_type in args.cells:
        for task, N in tasks:
            commands = {impl: [sys.executable, os.path.abspath(__file__), "--worker", impl, "--cell", cell_type,
                               "--task", task, "--n", str(N), "--threads", str(threads), "--warmup", str(args.warmup)]
                        for impl in implementations}
            records = time_interleaved(commands, worker_env(threads), args.rounds, args.block, args.pause)
            work = flops(cell_type, task, N)
            median = {impl: float(np.median(records[impl]["times"])) for impl in implementations}
            label = f"train N={N}" if task == "train" else f"greedy {N} x {MAX_LENGTH}"
            row = [cell_type, f"{label} ({work / 1e9:.2f})"] + [f"{median[impl] * 1e3:.1f}" for impl in implementations]
            row.append(ratio(records, "captionkit fp32", "captionkit bf16"))
            if with_torch:
                row.append(ratio(records, "torch autocast", "captionkit bf16"))
            row.append(f"{work / median['captionkit bf16'] / 1e9:.0f}")
            if peak:
                row.append(f"{100 * work / median['captionkit bf16'] / 1e9 / (peak * threads):.0f}")
                if with_torch:
                    row.append(f"{100 * work / median['torch autocast'] / 1e9 / (peak * threads):.0f}")
            print("| " + " | ".join(row) + " |", flush=True)


# ---------------------------------------------------------------------- convergence: the default training run

PRECISIONS = ("fp32", "bf16")


def _finished(run_dir):
    summary = run_dir / "summary.json"
    if not summary.is_file():
        return False
    record = json.loads(summary.read_text())
    return record.get("iteration") is not None and record.get("iteration") == record.get("num_iterations")


def train_runs(args):
    """Train (or reuse, or resume) every planned run, ``args.jobs`` at a time -> [run directory], in the order
    cell, precision, seed."""
    command = shutil.which("captionkit", path=os.path.dirname(sys.executable))
    if command is None:
        sys.exit(f"no captionkit command beside {sys.executable}: install captionkit into this environment "
                 "(pip install -e .)")
    root = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="bench-bf16-"))
    root.mkdir(parents=True, exist_ok=True)
    planned = [root / f"{cell}-{precision}-seed{seed}" for cell in args.cells for precision in PRECISIONS
               for seed in args.seeds]
    queue = []
    for run_dir in planned:
        cell, precision, seed = run_dir.name.split("-")
        if _finished(run_dir):
            print(f"{run_dir}: finished, reused", file=sys.stderr)
            continue
        if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("ckpt-*.npz")):
            queue.append((run_dir, [command, "train", "--resume", str(run_dir), "--quiet"]))
            continue
        argv = [command, "train", "--cell", cell, "--precision", precision, "--seed", seed[len("seed"):],
                "--out", str(run_dir), "--quiet"]
        queue.append((run_dir, argv + (["--epochs", str(args.epochs)] if args.epochs else [])))
    # Runs at once share the cores: each gets its part, so that none waits on another's threads.
    env = dict(os.environ, CAPTIONKIT_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // args.jobs)))
    running = []
    while queue or running:
        while queue and len(running) < args.jobs:
            run_dir, argv = queue.pop(0)
            log = open(root / f"{run_dir.name}.log", "w")
            print(f"{run_dir}: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
            running.append((run_dir, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        time.sleep(1)
        for job in [job for job in running if job[1].poll() is not None]:
            run_dir, proc, log = job
            log.close()
            running.remove(job)
            if proc.returncode != 0:
                for _, other, _ in running:
                    other.terminate()  # they save a checkpoint and stop: a rerun resumes them
                sys.exit(f"{run_dir}: captionkit train failed with exit status {proc.returncode}; see {log.name}")
    return planned


def convergence(args):
    """Print each run's last validation and the medians per precision; draw the runs' curves."""
    from captionkit.comparison import read_runs
    from captionkit.plotting import plot_comparison

    runs = train_runs(args)
    reports = read_runs(runs)
    for report in reports:
        planned = (report.path.name.split("-")[0], report.path.name.split("-")[1])
        if (report.config.get("cell"), report.config.get("precision")) != planned:
            sys.exit(f"{report.path}: a run of cell {report.config.get('cell')!r}, precision "
                     f"{report.config.get('precision')!r}, not the {planned[0]} {planned[1]} run its name promises")
    print(f"\n### convergence: captionkit train --cell CELL --precision P --seed S"
          f"{f' --epochs {args.epochs}' if args.epochs else ''}, the default run otherwise\n")
    print("The last validation of each run (CIDEr-D on the COCO toolkit's scale, greedy captions; loss per caption), "
          "at equal iterations:")
    print()
    print("| cell | seed | iterations | fp32 CIDEr-D | bf16 CIDEr-D | bf16 / fp32 - 1 | fp32 val loss | "
          "bf16 val loss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    final = {run.name: report.final() for run, report in zip(runs, reports)}
    for cell in args.cells:
        for seed in args.seeds:
            fp32, bf16 = (final[f"{cell}-{precision}-seed{seed}"] for precision in PRECISIONS)
            iterations = {report.summary.get("iteration") for report in reports
                          if report.path.name in (f"{cell}-fp32-seed{seed}", f"{cell}-bf16-seed{seed}")}
            print(f"| {cell} | {seed} | {'/'.join(map(str, sorted(iterations)))} | {fp32['CIDEr-D']:.3f} | "
                  f"{bf16['CIDEr-D']:.3f} | {bf16['CIDEr-D'] / fp32['CIDEr-D'] - 1:+.1%} | {fp32['loss']:.3f} | "
                  f"{bf16['loss']:.3f} |")
    print()
    print("| cell | seeds | fp32 median CIDEr-D | bf16 median CIDEr-D | gap (bf16 / fp32 - 1) | bf16 within 2% |")
    print("|---|---|---:|---:|---:|---|")
    for cell in args.cells:
        medians = {precision: float(np.median([final[f"{cell}-{precision}-seed{seed}"]["CIDEr-D"]
                                               for seed in args.seeds])) for precision in PRECISIONS}
        gap = medians["bf16"] / medians["fp32"] - 1
        print(f"| {cell} | {' '.join(map(str, args.seeds))} | {medians['fp32']:.3f} | {medians['bf16']:.3f} | "
              f"{gap:+.1%} | {'yes' if gap >= -0.02 else 'no'} |")
    figure = Path(args.figure) if args.figure else runs[0].parent / "convergence.png"
    plot_comparison(reports, "CIDEr-D", figure)
    print(f"\ncurves: {figure}; runs: {runs[0].parent}")


# ---------------------------------------------------------------------- the header and the driver


def header(args):
    """Print what this CPU runs and its measured peak -> the bf16 peak of one core in GFLOP/s (None without cc)."""
    from captionkit import kernels
    from captionkit.cpu import cpu_features

    features = cpu_features()
    print(f"{features.name}: {features.describe()}; {os.cpu_count()} cores; kernels' BLAS: {kernels.blas()}")
    if not {"products", "steps"} & set(args.parts):
        return None
    rates = peak_per_core()
    if rates is None:
        print("no C compiler (cc): the peak is not measured, and the shares of it are left out")
        return None
    gflops = {name: rates[name] * FLOPS_PER[name] / 1e9 for name in FLOPS_PER}
    described = [f"{rates[name] / 1e9:.3g} {name} per ns x {FLOPS_PER[name]} flops = {gflops[name]:.0f} GFLOP/s"
                 for name in ("tdpbf16ps", "vdpbf16ps", "fma") if rates[name] > 0]
    peak = max(gflops["tdpbf16ps"], gflops["vdpbf16ps"])
    print(f"peak, one core, measured: {'; '.join(described)} (fma: float32, 512 bits); the bf16 peak, "
          f"{peak:.0f} GFLOP/s, is the faster bf16 instruction's; captionkit's bf16 products run on "
          f"{kernels.bf16_kernel()}")
    if rates["tdpbf16ps"] > 0:  # what the tile products cost once their B tiles come from memory, not registers
        streamed = ", ".join(f"{size} {1e9 / rates[f'tdpbf16ps B from {size}']:.1f}" for size in STREAMS)
        print(f"ns per tdpbf16ps in captionkit's 2x2 tile loop, B read from a buffer of: {streamed} (registers "
              f"only: {1e9 / rates['tdpbf16ps']:.1f})")
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=["products"],
                        help="what to measure (default: products)")
    timing = parser.add_argument_group("products and steps")
    timing.add_argument("--rounds", type=int, default=5, help="rounds of turns (default 5)")
    timing.add_argument("--block", type=int, default=5, help="timed calls per turn (default 5)")
    timing.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="products: thread counts (default 1 2)")
    timing.add_argument("--step-threads", type=int, default=2,
                        help="steps: threads of every implementation (default 2)")
    timing.add_argument("--batches", type=int, nargs="+", default=[50, 200],
                        help="steps: N of the train steps (default 50 200)")
    timing.add_argument("--warmup", type=int, default=2,
                        help="steps: untimed iterations at a worker's start (default 2)")
    timing.add_argument("--pause", type=float, default=0.3,
                        help="steps: seconds between turns, for threads to settle (default 0.3)")
    parser.add_argument("--cells", nargs="+", help="steps: rnn lstm gru (default); convergence: lstm (default)")
    trained = parser.add_argument_group("convergence")
    trained.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                         help="seeds of each precision (default 0 1 2)")
    trained.add_argument("--runs", metavar="DIR", help="where the runs go, or are found from an earlier call "
                                                       "(default: a new temporary directory)")
    trained.add_argument("--jobs", type=int, default=1, help="runs at a time, sharing the cores (default 1)")
    trained.add_argument("--epochs", type=int, help="epochs of every run (default: the default run's)")
    trained.add_argument("--figure", metavar="PNG", help="the curves' picture (default: convergence.png in --runs)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker in STEP_IMPLEMENTATIONS:
        step_worker(args.worker, args.cell, args.task, args.n, args.threads[0], args.warmup)
        return
    if args.worker:
        product_worker(args.worker, args.threads[0])
        return
    from captionkit import kernels

    if not kernels.bf16_available():
        sys.exit("this CPU lacks AVX512-BF16: there is no bf16 kernel to measure (`captionkit info`)")
    peak = header(args)
    if "products" in args.parts:
        products(args, peak)
    if "steps" in args.parts:
        args.cells = args.cells or list(TORCH_MODULES)[:3]
        steps(args, peak)
    if "convergence" in args.parts:
        args.cells = args.cells or ["lstm"]
        convergence(args)


if __name__ == "__main__":
    main()

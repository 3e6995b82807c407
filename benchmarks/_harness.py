"""What the benchmark scripts share: worker processes that time one implementation each, driven in interleaved
rounds so that load from elsewhere on the machine falls on every implementation alike.

A script runs itself as a worker (``--worker ...``); :func:`serve` answers the driver on stdin/stdout, and
:func:`time_interleaved` starts the workers and collects their times, :func:`ratio` compares two of them.
"""
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np


def peak_rss_mib():
    """This process's peak resident set size (VmHWM) in MiB; NaN where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def torch_installed():
    return importlib.util.find_spec("torch") is not None


def worker_env(threads):
    """The environment for a worker: every BLAS/OpenMP runtime limited to ``threads``."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def serve(run, warmup, hello=None, status=None):
    """Worker side: run ``warmup`` untimed calls, print ``{"ready": True, **hello()}``, then answer each stdin line
    holding a count k with ``{"times": [k times in seconds], **status()}``."""
    for _ in range(warmup):
        run()
    print(json.dumps({"ready": True, **(hello() if hello else {})}), flush=True)
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        print(json.dumps({"times": times, **(status() if status else {})}), flush=True)


def time_interleaved(commands, env, rounds, block, pause):
    """Driver side: start one worker per ``commands[name]`` (argv), then ``rounds`` rounds of ``block`` timed calls
    each, rotating who goes first -> ``{name: {"hello": first reply, "last": last reply, "times": [...],
    "round_medians": [...]}}``."""
    workers, records = {}, {}
    for name, argv in commands.items():
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        workers[name] = proc
        records[name] = {"hello": json.loads(proc.stdout.readline()), "times": [], "round_medians": []}
        time.sleep(pause)
    names = list(commands)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            proc = workers[name]
            proc.stdin.write(f"{block}\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline())
            records[name]["times"] += reply["times"]
            records[name]["round_medians"].append(float(np.median(reply["times"])))
            records[name]["last"] = reply
            time.sleep(pause)
    for proc in workers.values():
        proc.stdin.close()
        proc.wait()
    return records


def ratio(records, impl, other):
    """The median over rounds of impl's per-round median divided by other's, as text."""
    if other not in records or impl == other:
        return "-"
    per_round = np.array(records[impl]["round_medians"]) / np.array(records[other]["round_medians"])
    return f"{np.median(per_round):.2f}x"

"""captionkit.allocation: the compiled model keeps freed memory in malloc's free lists for reuse unless told not to,
measured in a child process with glibc's mallinfo2."""
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
@pytest.mark.parametrize("env, kept", [({}, True), ({"CAPTIONKIT_KEEP_FREED_MEMORY": "0"}, False),
                                       ({"MALLOC_TRIM_THRESHOLD_": "131072"}, False)])
def test_compiled_model_keeps_freed_memory_for_reuse_unless_told_not_to(env, kept):
    # A freed 8 MiB array stays in malloc's free bytes (mallinfo2's fordblks) only with the setting in force;
    # without it the array is a mapping of its own, returned to the system (fordblks grows by about 0, not 8 MiB).
    code = """
import ctypes, numpy as np
from captionkit import CaptioningRNN, allocation
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
CaptioningRNN({"<NULL>": 0, "a": 1}, input_dim=3, wordvec_dim=2, hidden_dim=2, backend="cython")
before = libc.mallinfo2().fordblks
a = np.ones(1 << 20)
del a
print(allocation.keep_freed_memory(), libc.mallinfo2().fordblks - before >= 4 << 20)
"""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**environment, **env})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(kept), str(kept)]

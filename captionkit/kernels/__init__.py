"""Compiled kernels for recurrent captioning models: the public, checked entry points to ``captionkit._ext``.

Each function takes numpy arrays and follows the conventions of the :mod:`captionkit.layers` function it
accelerates (same argument order, shapes and return values), so the numpy reference can stand in for it and tests
compare the two. The gated recurrence engine (``gated_*``: the time loops of every gated cell, the built-in RNN's
among them), the output layer and the decoding steps run in C with the GIL released; every matrix product goes
through one BLAS, named by :func:`blas` (OpenBLAS from the scipy-openblas32 wheel, else scipy's), on one thread:
:mod:`captionkit.parallel` runs shards of a batch side by side instead.

Conventions shared by every function:

- Floating arrays are float32 or float64, all of one dtype per call (a mix raises TypeError), and C-contiguous
  (``np.ascontiguousarray`` makes them so); no dimension may be 0.
- Arrays a kernel only reads may be read-only. Arrays it writes into (only the Adam updates have any) must be
  writeable.
- Word ids may have any integer dtype and layout; every id must lie in ``[0, V)``.
- A bad call raises TypeError (wrong type or dtype) or ValueError (shape, size, layout or value), naming the
  argument; nothing reaches the compiled code unchecked.
- Every array must have fewer than 2**31 elements (BLAS counts in 32-bit integers).

Shapes use N minibatch, T time steps, D input size, H hidden size, V vocabulary size, M output size.

Example::

    import numpy as np
    from captionkit import kernels

    rng = np.random.default_rng(0)
    x, h0 = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 3))
    Wx, Wh, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 3)), np.zeros(3)
    h, cache = kernels.rnn_forward(x, h0, Wx, Wh, b)            # h: (2, 5, 3) float64
    dx, dh0, dWx, dWh, db = kernels.rnn_backward(np.ones_like(h), cache)

Any gated cell runs the same way with its ``pointwise`` (``cell.pointwise`` of a GatedCell)::

    h, cache = kernels.gated_forward(x, h0, Wx4, Wh4, b4, get_cell("lstm")(backend="cython").pointwise)

The package is split by concern: ``_checks`` (the argument checks), ``_layers`` (affine, embedding, activations,
the vanilla RNN), ``_recurrence`` (the gated engine), ``_output`` (output layer and decoding steps), ``_optim``
(Adam) and ``_built`` (whether the extension is built, its BLAS). It imports only ``captionkit._ext``,
:mod:`captionkit.pointwise` and :mod:`captionkit.checks`; threads are the caller's (:mod:`captionkit.backend`).
"""

from captionkit.kernels._attention import (
    SOFT_PARAMETERS,
    SOFT_STEP_PARAMETERS,
    SoftAttendedCache,
    soft_attended_backward,
    soft_attended_forward,
    soft_attended_greedy_decode,
    soft_attended_step,
    soft_attention_keys,
)
from captionkit.kernels._bf16 import (BF16_KERNELS, bf16_available, bf16_kernel, bf16_kernels, bf16_matmul, bf16_pack,
                                     use_bf16_kernel)
from captionkit.kernels._built import blas, blas_threads, is_available
from captionkit.kernels._layers import (
    affine_backward,
    affine_forward,
    rnn_backward,
    rnn_forward,
    rnn_step_forward,
    sigmoid,
    tanh,
    word_embedding_backward,
    word_embedding_forward,
)
from captionkit.kernels._optim import adam_update, adam_update_many
from captionkit.kernels._output import (
    affine_argmax,
    affine_log_softmax_topk,
    affine_sample,
    temporal_softmax_affine_loss,
    temporal_softmax_affine_nll,
)
from captionkit.kernels._recurrence import (
    GatedCache,
    capsule_problem,
    gated_backward,
    gated_forward,
    gated_greedy_decode,
    gated_step,
)

__all__ = [
    "BF16_KERNELS",
    "GatedCache",
    "SOFT_PARAMETERS",
    "SOFT_STEP_PARAMETERS",
    "SoftAttendedCache",
    "adam_update",
    "adam_update_many",
    "affine_argmax",
    "affine_backward",
    "affine_forward",
    "affine_log_softmax_topk",
    "affine_sample",
    "bf16_available",
    "bf16_kernel",
    "bf16_kernels",
    "bf16_matmul",
    "bf16_pack",
    "blas",
    "blas_threads",
    "capsule_problem",
    "gated_backward",
    "gated_forward",
    "gated_greedy_decode",
    "gated_step",
    "is_available",
    "rnn_backward",
    "rnn_forward",
    "rnn_step_forward",
    "sigmoid",
    "soft_attended_backward",
    "soft_attended_forward",
    "soft_attended_greedy_decode",
    "soft_attended_step",
    "soft_attention_keys",
    "tanh",
    "temporal_softmax_affine_loss",
    "temporal_softmax_affine_nll",
    "use_bf16_kernel",
    "word_embedding_backward",
    "word_embedding_forward",
]

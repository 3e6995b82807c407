"""The doubly stochastic penalty of "Show, Attend and Tell" (Xu et al. 2015, eq. 14): attention weights sum to 1
over the regions at every step by construction; the penalty asks them to sum to about 1 over the steps as well, so
that every region is looked at some time in the caption::

    penalty = weight * mean over images n of  sum_l (1 - sum_t mask[n, t] alpha[n, t, l])^2

Only the steps that predict a word count (``mask``, the loss's own). The mean over images matches the caption
loss, which sums over time and averages over the batch.
"""
import numpy as np

__all__ = ["doubly_stochastic_penalty"]


def doubly_stochastic_penalty(alphas, mask, weight, batch):
    """alphas (N, T, L), mask (N, T) of the words that count, ``weight`` lambda and the batch's size (N of the whole
    batch when these are a shard's rows) -> (penalty, its gradient in alphas (N, T, L))."""
    mask = mask.astype(alphas.dtype)
    shortfall = 1.0 - np.einsum("nt,ntl->nl", mask, alphas)                # (N, L)
    penalty = weight * float(np.sum(shortfall**2)) / batch
    dalphas = (-2.0 * weight / batch) * mask[:, :, None] * shortfall[:, None, :]
    return penalty, dalphas.astype(alphas.dtype, copy=False)

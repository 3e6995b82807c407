"""Centred finite-difference gradients, as in the CS231n assignments.

Every function perturbs ``x`` in place, one element at a time, and restores it before returning; the notebook's
lambdas ignore their argument and close over the very array being perturbed, so in-place is part of the contract.
"""
import numpy as np

__all__ = ["eval_numerical_gradient", "eval_numerical_gradient_array", "grad_check_sparse", "rel_error"]


def rel_error(x, y):
    """Largest elementwise relative error between two arrays, with a 1e-8 floor on the denominator."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def _centred_difference(f, x, ix, h):
    """(f(x + h e_ix) - f(x - h e_ix)) / 2h for scalar f, perturbing x[ix] in place and restoring it."""
    old = x[ix]
    x[ix] = old + h
    f_plus = f(x)
    x[ix] = old - h
    f_minus = f(x)
    x[ix] = old
    return (f_plus - f_minus) / (2 * h)


def eval_numerical_gradient(f, x, verbose=True, h=1e-5):
    """Gradient of a scalar function ``f(x)`` at ``x`` by centred differences; returns an array shaped like ``x``."""
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        grad[ix] = _centred_difference(f, x, ix, h)
        if verbose:
            print(ix, grad[ix])
    return grad


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Gradient of ``sum(f(x) * df)`` at ``x``: the numerical counterpart of a backward pass given upstream ``df``."""
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        old = x[ix]
        x[ix] = old + h
        pos = np.array(f(x), copy=True)
        x[ix] = old - h
        neg = np.array(f(x), copy=True)
        x[ix] = old
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
    return grad


def grad_check_sparse(f, x, analytic_grad, num_checks=10, h=1e-5):
    """Compare ``analytic_grad`` with centred differences of scalar ``f`` at ``num_checks`` random elements of ``x``.

    Prints one line per check, as the assignment does, and returns the relative errors.
    """
    errors = []
    for _ in range(num_checks):
        ix = tuple(np.random.randint(m) for m in x.shape)
        numerical = _centred_difference(f, x, ix, h)
        analytic = analytic_grad[ix]
        error = abs(numerical - analytic) / max(abs(numerical) + abs(analytic), 1e-12)
        errors.append(error)
        print("numerical: %f analytic: %f, relative error: %e" % (numerical, analytic, error))
    return errors

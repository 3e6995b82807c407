"""First-order update rules with the CS231n interface.

Each rule is ``next_w, config = rule(w, dw, config)``: ``config`` holds the hyperparameters and the rule's own state
(moments, step count), is filled with defaults on first use, and is returned so the caller keeps it per parameter.
"""
import numpy as np

from captionkit import parallel

__all__ = ["sgd", "sgd_momentum", "rmsprop", "adam", "fused_adam", "update_all", "UPDATE_RULES", "state_problem"]


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent. config: learning_rate (1e-2)."""
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    return w - config["learning_rate"] * dw, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum. config: learning_rate (1e-2), momentum (0.9), velocity (zeros like w)."""
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("momentum", 0.9)
    velocity = config["velocity"] if "velocity" in config else np.zeros_like(w)
    velocity = config["momentum"] * velocity - config["learning_rate"] * dw
    config["velocity"] = velocity
    return w + velocity, config


def rmsprop(w, dw, config=None):
    """RMSProp. config: learning_rate (1e-2), decay_rate (0.99), epsilon (1e-8), cache (zeros like w)."""
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("decay_rate", 0.99)
    config.setdefault("epsilon", 1e-8)
    cache = config["cache"] if "cache" in config else np.zeros_like(w)
    cache = config["decay_rate"] * cache + (1 - config["decay_rate"]) * dw**2
    config["cache"] = cache
    return w - config["learning_rate"] * dw / (np.sqrt(cache) + config["epsilon"]), config


def adam(w, dw, config=None):
    """Adam with bias correction. config: learning_rate (1e-3), beta1 (0.9), beta2 (0.999), epsilon (1e-8),
    m and v (zeros like w), t (0, the number of updates made so far)."""
    config = _adam_config(w, config)
    beta1, beta2, t = config["beta1"], config["beta2"], config["t"]
    config["m"] = beta1 * config["m"] + (1 - beta1) * dw
    config["v"] = beta2 * config["v"] + (1 - beta2) * dw**2
    m_hat = config["m"] / (1 - beta1**t)
    v_hat = config["v"] / (1 - beta2**t)
    return w - config["learning_rate"] * m_hat / (np.sqrt(v_hat) + config["epsilon"]), config


def _adam_config(w, config):
    """Adam's config with its defaults filled in and the step count advanced to this update."""
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    for key in ("m", "v"):
        if key not in config:  # not setdefault: that would allocate two arrays like w on every update
            config[key] = np.zeros_like(w)
    config.setdefault("t", 0)
    config["t"] += 1
    return config


def fused_adam(w, dw, config=None):
    """:func:`adam` in one compiled pass (``captionkit.kernels.adam_update``, a large ``w`` in slices on
    captionkit.parallel's threads): the same config, defaults and arithmetic, up to rounding. It updates ``w`` and
    the moments in place and returns ``w``, so the solver uses it for the parameters it owns when the model runs on
    the compiled backend; the reference stays :func:`adam`.
    """
    from captionkit import kernels

    w, dw, config = _fused_adam_arrays(w, dw, config)
    kernels.adam_update(w, dw, config["m"], config["v"], config["t"], *_adam_hyperparameters(config),
                        map_shards=parallel.map_shards)
    return w, config


def update_all(rule, params, grads, configs):
    """``params[name], configs[name] = rule(params[name], grads[name], configs[name])`` for every name in
    ``params`` (dicts; ``params`` and ``configs`` are updated). With :func:`fused_adam` the parameters that share
    Adam's hyperparameters and step count go through ``captionkit.kernels.adam_update_many`` in one call, whose
    threads (captionkit.parallel's) share out all their elements at once instead of one parameter after another."""
    if rule is not fused_adam:
        for name, value in params.items():
            params[name], configs[name] = rule(value, grads[name], configs[name])
        return
    from captionkit import kernels

    batches = {}  # (t, hyperparameters, dtype) -> names, so one call sees one step and one dtype
    for name, value in params.items():
        params[name], dw, configs[name] = _fused_adam_arrays(value, grads[name], configs[name])
        key = (configs[name]["t"], _adam_hyperparameters(configs[name]), params[name].dtype)
        batches.setdefault(key, []).append((name, dw))
    for (t, hyperparameters, _), members in batches.items():
        kernels.adam_update_many([params[name] for name, _ in members], [dw for _, dw in members],
                                 [configs[name]["m"] for name, _ in members],
                                 [configs[name]["v"] for name, _ in members], t, *hyperparameters,
                                 map_shards=parallel.map_shards)


def _fused_adam_arrays(w, dw, config):
    """(w, dw, config) as the compiled Adam takes them: w writeable and C-contiguous, dw contiguous in w's dtype,
    the config's defaults filled in, its step count advanced and its moments writeable arrays of w's dtype."""
    if not (w.flags.writeable and w.flags.c_contiguous):
        w = np.array(w, order="C")
    config = _adam_config(w, config)
    for key in ("m", "v"):  # moments restored from a checkpoint may be read-only or another dtype
        if not (config[key].flags.writeable and config[key].dtype == w.dtype and config[key].flags.c_contiguous):
            config[key] = np.array(config[key], dtype=w.dtype, order="C")
    return w, np.ascontiguousarray(dw, dtype=w.dtype), config


def _adam_hyperparameters(config):
    return config["learning_rate"], config["beta1"], config["beta2"], config["epsilon"]


UPDATE_RULES = {"sgd": sgd, "sgd_momentum": sgd_momentum, "rmsprop": rmsprop, "adam": adam}


def _number(low, high, low_open=False, high_open=True):
    def check(value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            return "a number"
        if not (np.isfinite(value) and (low < value if low_open else low <= value)
                and (value < high if high_open else value <= high)):
            return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        return None
    return check


def _step_count(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**53:
        return "an integer >= 0"
    return None


def _array(non_negative):
    def check(value):
        if not np.isfinite(value).all():
            return "finite values"
        if non_negative and (value < 0).any():
            return "values >= 0 (it is a running mean of squares)"
        return None
    return check


# What each setting or state array of the update rules may hold: a value outside breaks the rule's arithmetic (a
# negative second moment gives NaN; beta1 = 1 divides by zero), so a checkpoint holding one is refused when read.
_STATE_CHECKS = {
    "learning_rate": _number(0, np.inf, low_open=True), "momentum": _number(0, 1), "decay_rate": _number(0, 1),
    "epsilon": _number(0, np.inf, low_open=True), "beta1": _number(0, 1), "beta2": _number(0, 1), "t": _step_count,
    "velocity": _array(False), "m": _array(False), "cache": _array(True), "v": _array(True),
}


def state_problem(config):
    """Why ``config`` (one parameter's settings and state, as the rules keep it) cannot be trained from, naming
    the key, or None. Keys no rule uses are a problem too."""
    for key, value in config.items():
        check = _STATE_CHECKS.get(key)
        if check is None:
            return f"{key!r} is no setting of captionkit's update rules"
        expected = check(value)
        if expected is not None:
            shown = f"an array ({value.dtype}, {value.shape})" if isinstance(value, np.ndarray) else repr(value)
            return f"{key!r} is {shown}, expected {expected}"
    return None

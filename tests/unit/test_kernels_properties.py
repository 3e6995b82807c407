"""Property-based tests of every public kernel: random shapes, dtypes, layouts and faults (hypothesis).

Each example builds the arguments of one kernel call from random dimensions, then maybe spoils one argument (a
wrong dtype, shape or layout, a read-only array the kernel must write, an out-of-range id, a list instead of an
array) or empties a dimension. An oracle written here, independent of captionkit.kernels' checks, decides from the
arguments alone whether the call is valid: a valid call must equal the numpy reference (float64 to 1e-10, float32 to
1e-4 relative), an invalid one must raise TypeError or ValueError naming an argument. Nothing may crash.
"""
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from captionkit import kernels, layers, optim
from captionkit.cells import get_cell

pytestmark = pytest.mark.skipif(not kernels.is_available(), reason="compiled kernels not built")

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}

# Faults that spoil one argument; "ok" leaves it alone (drawn most often).
FAULTS = ["ok"] * 6 + ["float16", "int32", "other_float", "fortran", "strided", "read_only", "grow", "extra_dim",
                       "empty", "list"]
ID_FAULTS = ["ok"] * 6 + ["negative", "too_large", "float", "bool", "int8", "strided", "grow", "list"]


# ---------------------------------------------------------------------- building arguments


def float_arg(rng, shape, dtype, fault):
    """A float array of ``shape`` spoiled by ``fault``."""
    if fault == "grow":
        shape = shape[:-1] + (shape[-1] + 1,)
    elif fault == "extra_dim":
        shape = shape + (1,)
    elif fault == "empty":
        shape = shape[:-1] + (0,)
    base = rng.standard_normal(shape)
    if fault == "strided":
        base = rng.standard_normal(shape[:-1] + (2 * shape[-1],))[..., ::2]
    if fault == "float16":
        return base.astype(np.float16)
    if fault == "int32":
        return (base * 3).astype(np.int32)
    if fault == "other_float":
        dtype = np.float64 if np.dtype(dtype) == np.float32 else np.float32
    a = base.astype(dtype, copy=False)
    if fault == "fortran":
        a = np.asfortranarray(a)
    elif fault == "read_only":
        a.flags.writeable = False
    elif fault == "list":
        return a.tolist()
    return a


def non_negative(a):
    """Second moments are never negative: ``a`` made so in place, keeping its dtype, layout and flags."""
    if isinstance(a, np.ndarray) and a.dtype.kind == "f":
        writeable = a.flags.writeable
        a.flags.writeable = True
        np.abs(a, out=a)
        a.flags.writeable = writeable
    return a


def id_arg(rng, shape, vocab_size, fault):
    if fault == "grow":
        shape = shape[:-1] + (shape[-1] + 1,)
    ids = rng.integers(0, max(vocab_size, 1), size=shape)  # with no vocabulary every id is out of range
    if fault in ("negative", "too_large") and ids.size:
        ids.flat[rng.integers(ids.size)] = -1 if fault == "negative" else vocab_size
    if fault == "float":
        return ids.astype(np.float64)
    elif fault == "bool":
        return ids > 0
    elif fault == "int8":
        return ids.astype(np.int8)
    elif fault == "strided":
        return np.repeat(ids, 2, axis=-1)[..., ::2]  # non-contiguous, still valid for ids
    elif fault == "list":
        return ids.tolist()
    return ids


# ---------------------------------------------------------------------- the oracle


def bind_shapes(arrays, symbols):
    """True when every array's shape matches its symbolic shape with one value >= 1 per symbol."""
    values = {}
    for name, symbolic in symbols.items():
        shape = arrays[name].shape
        if len(shape) != len(symbolic):
            return False
        for symbol, size in zip(symbolic, shape):
            if size < 1 or values.setdefault(symbol, size) != size:
                return False
    return True


def floats_valid(arrays, written=()):
    """Numpy arrays, all float32 or all float64, C-contiguous, writeable where the kernel writes."""
    if not all(isinstance(a, np.ndarray) for a in arrays.values()):
        return False
    dtypes = {a.dtype for a in arrays.values()}
    return (len(dtypes) == 1 and dtypes <= set(FLOATS) and all(a.flags.c_contiguous for a in arrays.values())
            and all(arrays[name].flags.writeable for name in written))


def ids_valid(ids, vocab_size):
    return (isinstance(ids, np.ndarray) and ids.dtype != np.bool_ and np.issubdtype(ids.dtype, np.integer)
            and ids.size > 0 and ids.min() >= 0 and ids.max() < vocab_size)


def close(actual, expected, dtype):
    expected = np.asarray(expected, dtype=np.float64)
    error = np.linalg.norm(np.asarray(actual, dtype=np.float64) - expected) / max(np.linalg.norm(expected), 1e-30)
    assert error < TOLERANCE[np.dtype(dtype)], f"relative error {error:.3g}"


def as64(a):
    return np.asarray(a, dtype=np.float64)


def reference_rnn_cache(x, h0, Wx, Wh, h):
    """layers.rnn_forward's cache for hidden states h that a kernel computed. A backward is compared on the forward
    it was given: where tanh saturates, 1 - h^2 turns float32's rounding of h into errors far above 1e-4."""
    previous = [h0] + [h[:, t] for t in range(h.shape[1] - 1)]
    return [(x[:, t], previous[t], Wx, Wh, h[:, t]) for t in range(h.shape[1])]


def expect_clean_error(call, names):
    event("invalid")
    """The call raises TypeError or ValueError whose message names one of ``names``."""
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    message = str(info.value)
    assert any(re.search(rf"(^|[^\w]){re.escape(n)}($|[^\w])", message) for n in names), message


# Sizes 1 to 5, and now and then an empty batch or other empty dimension (0), which every kernel must refuse.
dims = st.fixed_dictionaries({k: st.sampled_from([0] + [1, 2, 3, 4, 5] * 3) for k in "NTDHV"})
positive_dims = st.fixed_dictionaries({k: st.integers(1, 5) for k in "NTDHV"})
dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2**32 - 1)


def faults_for(names, fault_list=FAULTS):
    """At most one spoiled argument: {name: fault}."""
    return st.tuples(st.sampled_from(names), st.sampled_from(fault_list)).map(lambda p: {p[0]: p[1]})


# ---------------------------------------------------------------------- kernels

RNN_SYMBOLS = {"x": "NTD", "h0": "NH", "Wx": "DH", "Wh": "HH", "b": "H"}
STEP_SYMBOLS = {"x": "ND", "prev_h": "NH", "Wx": "DH", "Wh": "HH", "b": "H"}
RNN_CALLS = {  # the sequence and the single step: kernel, reference, symbolic shapes
    "sequence": (kernels.rnn_forward, layers.rnn_forward, RNN_SYMBOLS),
    "step": (kernels.rnn_step_forward, layers.rnn_step_forward, STEP_SYMBOLS),
}


@SETTINGS
@given(st.sampled_from(list(RNN_CALLS)), dims, dtypes, st.sampled_from(list(STEP_SYMBOLS)), st.sampled_from(FAULTS),
       seeds)
def test_rnn_forward_and_step(which, d, dtype, spoiled, fault, seed):
    kernel, reference, symbols = RNN_CALLS[which]
    spoiled = spoiled if spoiled in symbols else "h0"
    rng = np.random.default_rng(seed)
    args = {name: float_arg(rng, tuple(d[s] for s in sym), dtype, fault if name == spoiled else "ok")
            for name, sym in symbols.items()}
    call = lambda: kernel(**args)  # noqa: E731
    if floats_valid(args) and bind_shapes(args, symbols):
        close(call()[0], reference(*(as64(args[n]) for n in symbols))[0], args["x"].dtype)
    else:
        expect_clean_error(call, list(symbols))


@SETTINGS
@given(positive_dims, dtypes, st.sampled_from(FAULTS), seeds)
def test_rnn_backward(d, dtype, fault, seed):
    rng = np.random.default_rng(seed)
    args = {name: float_arg(rng, tuple(d[s] for s in sym), dtype, "ok") for name, sym in RNN_SYMBOLS.items()}
    h, cache = kernels.rnn_forward(**args)
    dh = float_arg(rng, h.shape, dtype, fault)
    call = lambda: kernels.rnn_backward(dh, cache)  # noqa: E731
    if floats_valid({"dh": dh, "h": h}) and dh.shape == h.shape:
        ref_cache = reference_rnn_cache(*(as64(args[n]) for n in ("x", "h0", "Wx", "Wh")), as64(h))
        for got, want in zip(call(), layers.rnn_backward(as64(dh), ref_cache)):
            close(got, want, dtype)
    else:
        expect_clean_error(call, ["dh"])


GATED_SYMBOLS = {"x": "NTD", "h0": "NH", "Wx": "DG", "Wh": "HG", "b": "G"}
GATED_STEP_SYMBOLS = {"x": "ND", "h": "NH", "c": "NH", "Wx": "DG", "Wh": "HG", "b": "G"}


def _gated_reference(cell_type):
    """(the cell's pointwise part on the engine, its plugin's reference forward and step on (x, state, params))."""
    from captionkit_gru import layers as gru
    from captionkit_lstm import layers as lstm

    cell = get_cell(cell_type)(backend="cython")
    if cell_type == "lstm":
        return cell, lstm.lstm_forward, lambda x, state, Wx, Wh, b: lstm.lstm_step_forward(x, *state, Wx, Wh, b)[:2]
    return cell, gru.gru_forward, lambda x, state, Wx, Wh, b: (gru.gru_step_forward(x, state[0], Wx, Wh, b),)


@SETTINGS
@given(st.sampled_from(["lstm", "gru"]), st.sampled_from(["sequence", "step"]), dims, dtypes,
       st.sampled_from(list(GATED_STEP_SYMBOLS)), st.sampled_from(FAULTS), seeds)
def test_gated_engine_on_a_cell_of_two_states_and_one_of_apart_products(cell_type, which, d, dtype, spoiled, fault,
                                                                       seed):
    """The LSTM (two state arrays, summed, kept blocks) and the GRU (a and u apart), sequence and step."""
    cell, forward, step = _gated_reference(cell_type)
    gates = cell.gates
    symbols = GATED_SYMBOLS if which == "sequence" else GATED_STEP_SYMBOLS
    if cell_type == "gru" and which == "step":
        symbols = {k: v for k, v in symbols.items() if k != "c"}
    spoiled = spoiled if spoiled in symbols else "x"
    rng = np.random.default_rng(seed)
    sizes = dict(d, G=gates * d["H"])
    args = {name: float_arg(rng, tuple(sizes[s] for s in sym), dtype, fault if name == spoiled else "ok")
            for name, sym in symbols.items()}
    params = [args[n] for n in ("Wx", "Wh", "b")]
    if which == "sequence":
        call = lambda: kernels.gated_forward(args["x"], args["h0"], *params, cell.pointwise)  # noqa: E731
    else:
        state = (args["h"], args["c"]) if "c" in args else (args["h"],)
        call = lambda: kernels.gated_step(args["x"], state, *params, cell.pointwise)  # noqa: E731
    valid = floats_valid(args) and bind_shapes(args, symbols) and args["b"].shape[0] == gates * args["Wh"].shape[0]
    if not valid:
        expect_clean_error(call, list(symbols) + ["state[0]", "state[1]"])
        return
    if which == "sequence":
        h, cache = call()
        close(h, forward(*(as64(args[n]) for n in symbols))[0], args["x"].dtype)
        dx, dh0, *grads = kernels.gated_backward(np.ones_like(h), cache)
        assert dx.shape == args["x"].shape and dh0.shape == args["h0"].shape
    else:
        got = call()
        want = step(as64(args["x"]), tuple(as64(s) for s in state), *(as64(p) for p in params))
        for g, w in zip(got, want):
            close(g, w, args["x"].dtype)


@SETTINGS
@given(dims, dtypes, st.sampled_from(FAULTS), st.sampled_from(ID_FAULTS), st.sampled_from(FAULTS), seeds)
def test_word_embedding_forward_and_backward(d, dtype, w_fault, id_fault, dout_fault, seed):
    rng = np.random.default_rng(seed)
    W = float_arg(rng, (d["V"], d["D"]), dtype, w_fault)
    x = id_arg(rng, (d["N"], d["T"]), d["V"], id_fault)
    call = lambda: kernels.word_embedding_forward(x, W)  # noqa: E731
    valid = floats_valid({"W": W}) and W.ndim == 2 and min(W.shape) >= 1 and ids_valid(x, W.shape[0]) \
        and np.ndim(x) == 2
    if not valid:
        expect_clean_error(call, ["x", "W"])
        return
    out, cache = call()
    np.testing.assert_array_equal(out, W[x])
    dout = float_arg(rng, out.shape, W.dtype, dout_fault)
    dW_call = lambda: kernels.word_embedding_backward(dout, cache)  # noqa: E731
    if floats_valid({"dout": dout, "W": W}) and dout.shape == out.shape:
        close(dW_call(), layers.word_embedding_backward(as64(dout), (x, W.shape, np.float64)), W.dtype)
    else:
        expect_clean_error(dW_call, ["dout"])


AFFINE_SYMBOLS = {"x": "ND", "w": "DH", "b": "H"}


@SETTINGS
@given(dims, dtypes, faults_for(list(AFFINE_SYMBOLS) + ["dout"]), seeds)
def test_affine_forward_and_backward(d, dtype, fault, seed):
    rng = np.random.default_rng(seed)
    args = {name: float_arg(rng, tuple(d[s] for s in sym), dtype, fault.get(name, "ok"))
            for name, sym in AFFINE_SYMBOLS.items()}
    call = lambda: kernels.affine_forward(**args)  # noqa: E731
    if not (floats_valid(args) and bind_shapes(args, AFFINE_SYMBOLS)):
        expect_clean_error(call, list(AFFINE_SYMBOLS))
        return
    out, cache = call()
    out_ref, cache_ref = layers.affine_forward(*(as64(args[n]) for n in AFFINE_SYMBOLS))
    close(out, out_ref, dtype)
    dout = float_arg(rng, out.shape, dtype, fault.get("dout", "ok"))
    backward = lambda: kernels.affine_backward(dout, cache)  # noqa: E731
    if floats_valid({"dout": dout, "x": args["x"]}) and dout.shape == out.shape:
        for got, want in zip(backward(), layers.affine_backward(as64(dout), cache_ref)):
            close(got, want, dtype)
    else:
        expect_clean_error(backward, ["dout"])


OUTPUT_SYMBOLS = {"h": "NTH", "w": "HV", "b": "V"}


@SETTINGS
@given(dims, dtypes, faults_for(list(OUTPUT_SYMBOLS) + ["y", "mask"]), st.sampled_from(ID_FAULTS), seeds)
def test_temporal_softmax_affine_loss(d, dtype, fault, id_fault, seed):
    rng = np.random.default_rng(seed)
    args = {name: float_arg(rng, tuple(d[s] for s in sym), dtype, fault.get(name, "ok"))
            for name, sym in OUTPUT_SYMBOLS.items()}
    y = id_arg(rng, (d["N"], d["T"]), d["V"], id_fault if "y" in fault else "ok")
    mask = rng.random((d["N"], d["T"])) < 0.7
    if "mask" in fault:
        mask = {"ok": mask, "int32": mask.astype(np.int32), "grow": np.ones((d["N"], d["T"] + 1), bool),
                "list": mask.tolist()}.get(fault["mask"], np.asfortranarray(mask))  # bool in any layout is valid
    call = lambda: kernels.temporal_softmax_affine_loss(args["h"], args["w"], args["b"], y, mask)  # noqa: E731
    valid = (floats_valid(args) and bind_shapes(args, OUTPUT_SYMBOLS) and ids_valid(y, d["V"])
             and np.shape(y) == (d["N"], d["T"]) and isinstance(mask, np.ndarray) and mask.dtype == np.bool_
             and mask.shape == (d["N"], d["T"]))
    if not valid:
        expect_clean_error(call, list(OUTPUT_SYMBOLS) + ["y", "mask"])
        return
    loss, *grads = call()
    h, w, b = (as64(args[n]) for n in OUTPUT_SYMBOLS)
    scores, cache = layers.temporal_affine_forward(h, w, b)
    loss_ref, dscores = layers.temporal_softmax_loss(scores, y, mask)
    assert abs(loss - loss_ref) <= TOLERANCE[np.dtype(dtype)] * max(abs(loss_ref), 1.0)
    for got, want in zip(grads, layers.temporal_affine_backward(dscores, cache)):
        close(got, want, dtype)


DECODE_SYMBOLS = {"h": "NH", "w": "HV", "b": "V"}


@SETTINGS
@given(dims, dtypes, faults_for(list(DECODE_SYMBOLS) + ["k"]), st.integers(-1, 7), seeds)
def test_decoding_steps(d, dtype, fault, k, seed):
    rng = np.random.default_rng(seed)
    args = {name: float_arg(rng, tuple(d[s] for s in sym), dtype, fault.get(name, "ok"))
            for name, sym in DECODE_SYMBOLS.items()}
    k = {"float": float(k), "list": [k]}.get(fault.get("k"), k)
    argmax = lambda: kernels.affine_argmax(**args)  # noqa: E731
    topk = lambda: kernels.affine_log_softmax_topk(**args, k=k)  # noqa: E731
    if not (floats_valid(args) and bind_shapes(args, DECODE_SYMBOLS)):
        expect_clean_error(argmax, list(DECODE_SYMBOLS))
        expect_clean_error(topk, list(DECODE_SYMBOLS))
        return
    scores = as64(args["h"]) @ as64(args["w"]) + as64(args["b"])
    tol = TOLERANCE[np.dtype(dtype)] * (1 + np.abs(scores).max())
    best = argmax()
    # The chosen word scores the maximum (up to rounding: float32 may break a near-tie the other way).
    assert np.all(scores[np.arange(d["N"]), best] >= scores.max(axis=1) - tol)
    if not (isinstance(k, int) and 1 <= k <= d["V"]):
        expect_clean_error(topk, ["k"])
        return
    logp, ids = topk()
    shifted = scores - scores.max(axis=1, keepdims=True)
    ref = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(logp, -np.sort(-ref, axis=1)[:, :k], atol=tol)
    np.testing.assert_allclose(np.take_along_axis(ref, ids, axis=1), logp, atol=tol)
    assert all(len(set(row)) == k for row in ids.tolist())


GREEDY_SYMBOLS = {"h0": "NH", "W_embed": "VD", "Wx": "DH", "Wh": "HH", "b": "H", "W_vocab": "HV", "b_vocab": "V"}


@SETTINGS
@given(dims, dtypes, faults_for(list(GREEDY_SYMBOLS) + ["start", "end"], FAULTS + ["too_large"]), st.integers(1, 6),
       seeds)
def test_gated_greedy_decode_with_the_rnn(d, dtype, fault, max_length, seed):
    rng = np.random.default_rng(seed)
    args = {name: float_arg(rng, tuple(d[s] for s in sym), dtype, fault.get(name, "ok"))
            for name, sym in GREEDY_SYMBOLS.items()}
    ids = {"start": int(rng.integers(0, max(d["V"], 1))), "end": int(rng.integers(0, max(d["V"], 1)))}
    for name in ids:
        ids[name] = {"too_large": d["V"], "float": float(ids[name]), "list": [ids[name]]}.get(fault.get(name), ids[name])
    rnn = get_cell("rnn")(backend="cython").pointwise
    call = lambda: kernels.gated_greedy_decode(**args, **ids, null=0, max_length=max_length,  # noqa: E731
                                               pointwise=rnn)
    ids_ok = all(isinstance(v, int) and 0 <= v < d["V"] for v in ids.values())
    if not (floats_valid(args) and bind_shapes(args, GREEDY_SYMBOLS) and ids_ok):
        expect_clean_error(call, list(GREEDY_SYMBOLS) + ["start", "end"])
        return
    captions = call()
    assert captions.shape == (d["N"], max_length) and captions.dtype == np.int32
    # Oracle: the step loop in float64, fed the words the kernel chose; each chosen word must score the maximum
    # (up to rounding, which may break a near-tie the other way), and a caption is null after its end word.
    p = {name: as64(a) for name, a in args.items()}
    h, words, alive = p["h0"], np.full(d["N"], ids["start"]), np.ones(d["N"], bool)
    for t in range(max_length):
        h = np.tanh(p["W_embed"][words] @ p["Wx"] + h @ p["Wh"] + p["b"])
        scores = h @ p["W_vocab"] + p["b_vocab"]
        tol = TOLERANCE[np.dtype(dtype)] * (1 + np.abs(scores).max()) * (t + 1)
        chosen = np.where(alive, captions[:, t], scores.argmax(axis=1))
        assert np.all(np.where(alive, captions[:, t], 0) == np.where(alive, chosen, 0))
        assert np.all(captions[~alive, t] == 0)
        assert np.all(scores[np.arange(d["N"]), chosen] >= scores.max(axis=1) - tol)
        words = chosen
        alive &= words != ids["end"]
        if not alive.any():
            assert np.all(captions[:, t + 1:] == 0)
            break


ADAM_FAULTS = ["ok"] * 6 + ["float16", "other_float", "fortran", "strided", "read_only", "grow", "list", "alias"]


@SETTINGS
@given(positive_dims, dtypes, faults_for(["w", "dw", "m", "v"], ADAM_FAULTS), st.integers(1, 50), seeds)
def test_adam_update(d, dtype, fault, t, seed):
    rng = np.random.default_rng(seed)
    shape = (d["N"], d["H"])
    args = {name: float_arg(rng, shape, dtype, "ok" if fault.get(name) == "alias" else fault.get(name, "ok"))
            for name in ("w", "dw", "m", "v")}
    non_negative(args["v"])
    if "alias" in fault.values():
        spoiled = next(iter(fault))
        args[spoiled] = args["m" if spoiled != "m" else "v"]
    before = {name: np.array(a, copy=True) if isinstance(a, np.ndarray) else a for name, a in args.items()}
    call = lambda: kernels.adam_update(**args, t=t, learning_rate=1e-2)  # noqa: E731
    distinct = len({id(a) for a in args.values()}) == 4
    if not (floats_valid(args, written=("w", "m", "v")) and distinct
            and all(a.shape == shape for a in args.values())):
        expect_clean_error(call, ["w", "dw", "m", "v"])
        return
    call()
    config = {"learning_rate": 1e-2, "m": as64(before["m"]), "v": as64(before["v"]), "t": t - 1}
    w_ref, config = optim.adam(as64(before["w"]), as64(before["dw"]), config)
    close(args["w"], w_ref, dtype)
    close(args["m"], config["m"], dtype)
    close(args["v"], config["v"], dtype)


@SETTINGS
@given(st.lists(positive_dims, min_size=1, max_size=4), dtypes,
       st.integers(0, 3), faults_for(["ws", "dws", "ms", "vs"], ADAM_FAULTS), st.integers(1, 50), seeds)
def test_adam_update_many(groups, dtype, spoiled_group, fault, t, seed):
    rng = np.random.default_rng(seed)
    shapes = [(d["N"], d["H"]) for d in groups]
    spoiled_group %= len(shapes)
    lists = {name: [] for name in ("ws", "dws", "ms", "vs")}
    for i, shape in enumerate(shapes):
        for name in lists:
            spoil = fault.get(name, "ok") if i == spoiled_group else "ok"
            lists[name].append(float_arg(rng, shape, dtype, "ok" if spoil == "alias" else spoil))
        non_negative(lists["vs"][i])
    if "alias" in fault.values():  # one array of the spoiled group is a moment array of another group (or its own)
        name = next(iter(fault))
        other = (spoiled_group + 1) % len(shapes)
        lists[name][spoiled_group] = lists["ms" if name != "ms" else "vs"][other]
    every = {f"{name}[{i}]": a for name, arrays in lists.items() for i, a in enumerate(arrays)}
    before = {key: np.array(a, copy=True) if isinstance(a, np.ndarray) else a for key, a in every.items()}
    call = lambda: kernels.adam_update_many(**lists, t=t, learning_rate=1e-2)  # noqa: E731
    written = [key for key in every if not key.startswith("dws")]
    distinct = len({id(a) for a in every.values()}) == len(every)
    if not (floats_valid(every, written=written) and distinct
            and all(lists[name][i].shape == shapes[i] for name in lists for i in range(len(shapes)))):
        expect_clean_error(call, list(every))
        return
    call()
    for i in range(len(shapes)):
        config = {"learning_rate": 1e-2, "m": as64(before[f"ms[{i}]"]), "v": as64(before[f"vs[{i}]"]), "t": t - 1}
        w_ref, config = optim.adam(as64(before[f"ws[{i}]"]), as64(before[f"dws[{i}]"]), config)
        close(lists["ws"][i], w_ref, dtype)
        close(lists["ms"][i], config["m"], dtype)
        close(lists["vs"][i], config["v"], dtype)

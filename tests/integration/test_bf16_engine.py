"""The compiled bf16 engine against the numpy emulation of the same arithmetic, for every registered GatedCell:
a whole model's loss and gradients (forward and backward of conditioning, cell and output layer), one decoding
step of the engine, greedy and beam decoding.

Oracle: the numpy backend at ``precision="bf16"`` (captionkit/layers.py), whose every product is
``round_to_bf16(a) @ round_to_bf16(b)`` summed in float32 (tests/unit/test_precision_layers.py checks it against
:func:`captionkit.precision.bf16_matmul_reference`).

The bound. Write R for rounding to bfloat16 (unit roundoff u = 2**-8: bfloat16 values of one binade are 2u
apart, relative) and v = 2**-24 for float32's. Both sides multiply the same rounded inputs, and a product of two
bfloat16 values (8 significant bits each) is exact in float32, so in one product C = R(A) R(B) of inner size k
they differ only in the order of the float32 sums: each is within gamma_k |R(A)| |R(B)| of the exact sum
(gamma_k = k v / (1 - k v)), so they differ by at most 2 gamma_k |R(A)| |R(B)| elementwise, and typically by
delta ~ sqrt(k) v ~ 1e-6 relative for these sizes (k <= N*T = 144). The pointwise parts (a cell's C capsule
against its numpy code) add a few float32 ulps more. Such a difference in a value that the next product rounds to
bfloat16 matters when that value lies within delta of a rounding boundary: it then rounds to the neighbouring
bfloat16 value on one side and not on the other, moving that input by one bfloat16 ulp, 2u = 2**-7 of its value.
A share p ~ delta / (2u) ~ 1e-4 of the values flip, which moves a product norm-wise by about
sqrt(p) * 2u ~ 1e-4 (measured: up to 2.2e-4 over the whole model's gradients after the T steps of the recurrence
and its backward), below BOUND = 1e-3. fp32 and bf16 differ by the rounding itself, every input moved by up to u
(u / sqrt(3) ~ 2.3e-3 norm-wise, measured 3e-3 to 6e-3 through the same steps): about 1 / (2 sqrt(3 p)) ~ 25
times more (measured at least 25). So the compiled bf16 engine must be within BOUND of the emulation AND at
least CLOSER = 10 times closer to it than the compiled fp32 engine is, which a kernel that ignored ``precision``
(or rounded one input only) cannot be.

Greedy and beam decoding choose words by comparing scores that agree to the bound above, so both sides pick the
same captions unless two candidates' scores lie within ~1e-4 of each other; the seeds here have no such tie, and
the beam's log-probabilities of those captions meet the same 1e-3 and 10x rule.

Skipped, with the reason, where the compiled kernels are not built or the CPU has no AVX512-BF16.
"""
import numpy as np
import pytest

from captionkit import CaptioningRNN, kernels, layers
from captionkit.cells import GatedCell, available_cells, get_cell
from captionkit.decoding import decode

pytestmark = [
    pytest.mark.skipif(not kernels.is_available(), reason="the compiled kernels are not built"),
    pytest.mark.skipif(kernels.is_available() and not kernels.bf16_available(),
                       reason="this CPU has no AVX512-BF16 (vdpbf16ps), so there is no compiled bf16 to test; "
                              "`captionkit info` lists what it offers"),
    pytest.mark.usefixtures("bf16_kernel"),  # on every bfloat16 kernel this CPU runs (conftest.py)
]

BOUND = 1e-3  # compiled bf16 against emulated bf16, norm-wise relative (the docstring's derivation)
CLOSER = 10  # ... and at least this many times closer than compiled fp32 is
N, T, D, W, H = 16, 9, 20, 16, 32
VOCAB = {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, **{f"w{i}": i + 4 for i in range(40)}}


def gated_cells():
    """Every registered cell that the engine runs (a GatedCell), so that an installed plugin is tested too."""
    return [name for name in available_cells() if issubclass(get_cell(name), GatedCell)]


def norm_error(actual, expected):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def assert_closer(compiled_bf16, compiled_fp32, emulated, what):
    close, far = norm_error(compiled_bf16, emulated), norm_error(compiled_fp32, emulated)
    assert close < BOUND, f"{what}: compiled bf16 is {close:.2e} from the emulation, beyond {BOUND}"
    assert CLOSER * close <= far, f"{what}: compiled bf16 {close:.2e}, compiled fp32 {far:.2e} from the emulation"


def models(cell_type, scale=1.0, end_bias=0.0):
    """{(backend, precision): model} with the same parameters (times ``scale``, and ``end_bias`` the score bias of
    <END>)."""
    made = {(backend, precision): CaptioningRNN(VOCAB, input_dim=D, wordvec_dim=W, hidden_dim=H,
                                                cell_type=cell_type, backend=backend, seed=3, precision=precision)
            for backend in ("numpy", "cython") for precision in ("fp32", "bf16")}
    params = {name: value * np.float32(scale) for name, value in made["numpy", "fp32"].params.items()}
    params["b_vocab"][VOCAB["<END>"]] = end_bias
    for model in made.values():
        model.params = {name: value.copy() for name, value in params.items()}
    return made


def flat_gradients(grads):
    return np.concatenate([grads[name].ravel() for name in sorted(grads)])


@pytest.mark.parametrize("cell_type", gated_cells())
def test_loss_and_gradients_of_a_whole_model(cell_type):
    rng = np.random.RandomState(25)
    features = rng.standard_normal((N, D)).astype(np.float32)
    captions = rng.randint(4, len(VOCAB), size=(N, T + 1))
    captions[:, 0], captions[::3, 6:] = 1, 0  # some captions padded with <NULL>
    results = {key: model.loss(features, captions) for key, model in models(cell_type).items()}
    emulated = results["numpy", "bf16"]
    assert_closer(results["cython", "bf16"][0], results["cython", "fp32"][0], emulated[0], "loss")
    assert_closer(flat_gradients(results["cython", "bf16"][1]), flat_gradients(results["cython", "fp32"][1]),
                  flat_gradients(emulated[1]), "all gradients")
    for name in emulated[1]:  # no parameter hides behind the others' norm
        assert norm_error(results["cython", "bf16"][1][name], emulated[1][name]) < BOUND, name


@pytest.mark.parametrize("cell_type", gated_cells())
def test_one_decoding_step_of_the_engine(cell_type):
    rng = np.random.RandomState(7)
    compiled, reference = get_cell(cell_type)(backend="cython"), get_cell(cell_type)(backend="numpy")
    G = compiled.gates
    x, h = rng.standard_normal((N, W)).astype(np.float32), rng.standard_normal((N, H)).astype(np.float32)
    Wx = (rng.standard_normal((W, G * H)) / np.sqrt(W)).astype(np.float32)
    Wh = (rng.standard_normal((H, G * H)) / np.sqrt(H)).astype(np.float32)
    b = (rng.standard_normal(G * H) * 0.1).astype(np.float32)
    state = tuple(np.ascontiguousarray(s + 0.5 * i, dtype=np.float32)
                  for i, s in enumerate(reference.pointwise.initial_state(h)))
    emulated = layers.gated_step(x, state, Wx, Wh, b, reference.pointwise, precision="bf16")
    bf16 = kernels.gated_step(x, state, Wx, Wh, b, compiled.pointwise, precision="bf16")
    fp32 = kernels.gated_step(x, state, Wx, Wh, b, compiled.pointwise)
    for i, want in enumerate(emulated):
        assert_closer(bf16[i], fp32[i], want, f"state[{i}]")


@pytest.mark.parametrize("cell_type", gated_cells())
def test_greedy_and_beam_decoding(cell_type):
    made = models(cell_type, scale=3.0, end_bias=2.0)  # large weights: captions vary; and some end early
    features = np.random.RandomState(9).standard_normal((N, D)).astype(np.float32)
    greedy = made["numpy", "bf16"].sample(features, max_length=9)
    np.testing.assert_array_equal(made["cython", "bf16"].sample(features, max_length=9), greedy)
    ended = (greedy == VOCAB["<END>"]).any(axis=1)
    assert ended.any() and len(np.unique(greedy, axis=0)) > 1  # captions that end and that differ
    beams = {key: decode(model, features, 9, beam_size=3) for key, model in made.items()}
    emulated = beams["numpy", "bf16"]
    np.testing.assert_array_equal(beams["cython", "bf16"].captions, emulated.captions)
    same = (beams["cython", "fp32"].captions == emulated.captions).all(axis=1)  # log-probabilities of one caption
    assert same.sum() >= N // 2
    assert_closer(beams["cython", "bf16"].log_probs[same], beams["cython", "fp32"].log_probs[same],
                  emulated.log_probs[same], "beam log-probabilities")

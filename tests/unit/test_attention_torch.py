"""The numpy reference of soft attention (captionkit.attention: SoftAttention inside AttendedCell, and the doubly
stochastic penalty) against PyTorch autograd on the same equations, float64, for rnn, lstm and gru.

The PyTorch side is written here from the equations of docs/attention.md (Xu et al. 2015 as the common PyTorch
tutorial implements them), step by step, and differentiated by autograd: forward values, every gradient (inputs,
the grid V and every parameter) and the penalty's contribution agree to a relative error of 1e-10. A whole
attention model's loss and gradients (CaptioningRNN.loss: embedding, h0 from the mean of the grid, the cell, the
masked softmax loss and the penalty) are held to the same bound. Skipped when torch is not installed.
"""
import numpy as np
import pytest

from captionkit import CaptioningRNN
from captionkit.attention import SoftAttention, doubly_stochastic_penalty
from captionkit.attention.cell import AttendedCell
from captionkit.cells import CellSizes, available_cells, get_cell
from conftest import relative_error

torch = pytest.importorskip("torch", reason="PyTorch is the independent oracle here and is not installed "
                                            "(pip install torch)")

N, T, W, H, D, L, A = 3, 5, 4, 6, 7, 5, 8
PENALTY = 0.7
BOUND = 1e-10


def _cell_step(cell_type, a, u, state):
    """One step of the cell from its input pre-activations a (glimpse included) and u = h Wh, as each cell's
    docstring defines it -> the next state."""
    if cell_type == "rnn":
        return (torch.tanh(a + u),)
    if cell_type == "lstm":
        h, c = state
        pre = a + u
        i, f, o = torch.sigmoid(pre[:, :H]), torch.sigmoid(pre[:, H:2 * H]), torch.sigmoid(pre[:, 2 * H:3 * H])
        g = torch.tanh(pre[:, 3 * H:])
        c = f * c + i * g
        return o * torch.tanh(c), c
    (h,) = state
    r = torch.sigmoid(a[:, :H] + u[:, :H])
    z = torch.sigmoid(a[:, H:2 * H] + u[:, H:2 * H])
    n = torch.tanh(a[:, 2 * H:] + r * u[:, 2 * H:])
    return ((1 - z) * n + z * h,)


def torch_attended(cell_type, x, h0, V, p):
    """h (N, T, H) and alpha (N, T, L) of the attended cell, in torch: the docs' equations, one step at a time."""
    mean = V.mean(dim=1)
    state = (h0, mean @ p["att_W_init1"] + p["att_b_init1"]) if cell_type == "lstm" else (h0,)
    keys = V @ p["att_Ua"]                                                         # (N, L, A), once
    hs, alphas = [], []
    for t in range(x.shape[1]):
        h_prev = state[0]
        s = torch.tanh(keys + (h_prev @ p["att_Wa"] + p["att_ba"])[:, None, :])   # (N, L, A)
        alpha = torch.softmax(s @ p["att_wa"], dim=1)                              # (N, L)
        z = (alpha[:, :, None] * V).sum(dim=1)                                     # (N, D)
        beta = torch.sigmoid(h_prev @ p["att_Wbeta"] + p["att_bbeta"])             # (N, D)
        a = x[:, t] @ p["Wx"] + p["b"] + (beta * z) @ p["att_Wz"]
        state = _cell_step(cell_type, a, h_prev @ p["Wh"], state)
        hs.append(state[0])
        alphas.append(alpha)
    return torch.stack(hs, dim=1), torch.stack(alphas, dim=1)


def torch_penalty(alphas, mask, weight):
    """weight * mean over images of sum_l (1 - sum_t mask alpha)^2 (Xu et al., eq. 14, over the counted steps)."""
    return weight * ((1 - (mask[:, :, None] * alphas).sum(dim=1)) ** 2).sum() / alphas.shape[0]


def leaves(arrays):
    """float64 torch tensors that autograd differentiates, from numpy arrays (a dict or a list of them)."""
    if isinstance(arrays, dict):
        return {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in arrays.items()}
    return [torch.tensor(value, dtype=torch.float64, requires_grad=True) for value in arrays]


@pytest.fixture(params=["rnn", "lstm", "gru"])
def cell_type(request):
    if request.param not in available_cells():
        pytest.skip(f"cell {request.param!r} is not installed")
    return request.param


def test_attended_cell_matches_autograd(cell_type):
    cell = AttendedCell(get_cell(cell_type)(backend="numpy"), SoftAttention(), A)
    rng = np.random.RandomState(4)
    params = cell.init_params_for(CellSizes(W, H, D, D), rng)
    params = {name: value + 0.3 * rng.standard_normal(value.shape) for name, value in params.items()}
    x, h0, V = rng.standard_normal((N, T, W)), rng.standard_normal((N, H)), rng.standard_normal((N, L, D))
    dout = rng.standard_normal((N, T, H))
    mask = rng.rand(N, T) < 0.7  # steps whose word counts, as the loss's mask

    h, cache = cell.run_forward(x, h0, params, V)
    alphas = cell.attention_weights(cache)
    penalty, dalphas = doubly_stochastic_penalty(alphas, mask, PENALTY, N)
    dx, dh0, dV, grads = cell.run_backward(dout, cache, dalphas)

    tp = leaves(params)
    tx, th0, tV = leaves([x, h0, V])
    th, talphas = torch_attended(cell_type, tx, th0, tV, tp)
    tpenalty = torch_penalty(talphas, torch.tensor(mask, dtype=torch.float64), PENALTY)
    ((th * torch.tensor(dout)).sum() + tpenalty).backward()

    assert relative_error(h, th.detach().numpy()) < BOUND
    assert relative_error(alphas, talphas.detach().numpy()) < BOUND
    assert penalty == pytest.approx(tpenalty.item(), rel=BOUND)
    assert set(grads) == set(params)
    for what, analytic, expected in [("x", dx, tx.grad), ("h0", dh0, th0.grad), ("V", dV, tV.grad),
                                     *[(name, grads[name], tp[name].grad) for name in params]]:
        assert relative_error(analytic, expected.numpy()) < BOUND, what


def test_attention_models_loss_matches_autograd(cell_type):
    """CaptioningRNN.loss of an attention model (float64, numpy backend): the loss with its penalty and the
    gradient of every parameter, against the same model written in torch."""
    words = ["<NULL>", "<START>", "<END>"] + [f"w{i}" for i in range(9)]
    model = CaptioningRNN({w: i for i, w in enumerate(words)}, input_dim=D, wordvec_dim=W, hidden_dim=H,
                          cell_type=cell_type, regions=L, attention="soft", attention_dim=A, attention_penalty=PENALTY,
                          dtype=np.float64, backend="numpy", seed=5)
    rng = np.random.RandomState(6)
    for name, value in model.params.items():
        model.params[name] = value + 0.2 * rng.standard_normal(value.shape)
    features = rng.standard_normal((N, L, D))
    captions = rng.randint(3, len(words), size=(N, T + 1))
    captions[:, 0] = 1
    captions[0, 3:] = 0  # a short caption: <NULL> targets count for nothing, in the loss and the penalty
    captions[1, 4], captions[1, 5:] = 2, 0
    loss, grads = model.loss(features, captions)

    tp = leaves(model.params)
    (tV,) = leaves([features])
    ids = torch.tensor(captions)
    h0 = tV.mean(dim=1) @ tp["W_proj"] + tp["b_proj"]
    th, talphas = torch_attended(cell_type, tp["W_embed"][ids[:, :-1]], h0, tV, tp)
    scores = th @ tp["W_vocab"] + tp["b_vocab"]
    targets, mask = ids[:, 1:], (ids[:, 1:] != 0).double()
    nll = torch.nn.functional.cross_entropy(scores.reshape(-1, len(words)), targets.reshape(-1), reduction="none")
    tloss = (nll * mask.reshape(-1)).sum() / N + torch_penalty(talphas, mask, PENALTY)
    tloss.backward()

    assert loss == pytest.approx(tloss.item(), rel=BOUND)
    assert set(grads) == set(tp)
    for name, value in tp.items():
        assert relative_error(grads[name], value.grad.numpy()) < BOUND, name

"""The seed notebook's cells, transcribed with only the imports changed (examples/seed_notebook.py), print its numbers
on both backends."""
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "examples" / "seed_notebook.py"

# (printed label, occurrence, bound) for every error the notebook prints, in order: the notebook's own bounds.
BOUNDS = [
    ("next_h error", 0, 1e-8),
    ("dx error", 0, 1e-8), ("dprev_h error", 0, 1e-8), ("dWx error", 0, 1e-8), ("dWh error", 0, 1e-8),
    ("db error", 0, 1e-8),
    ("h error", 0, 1e-7),
    ("dx error", 1, 1e-6), ("dh0 error", 0, 1e-6), ("dWx error", 1, 1e-6), ("dWh error", 1, 1e-6),
    ("db error", 1, 1e-6),
    ("out error", 0, 1e-7), ("dW error", 0, 1e-10),
    ("dx error", 2, 1e-8), ("dw error", 0, 1e-8), ("db error", 2, 1e-8),
    ("dx error", 3, 1e-6),
    ("difference", 0, 1e-10),
]


@pytest.fixture(scope="module", params=["numpy", "cython"])
def notebook_output(request, tmp_path_factory):
    """The notebook run whole on each backend: its numbers must come out on both."""
    pytest.importorskip("matplotlib")
    from captionkit.backend import compiled_available
    from captionkit.synthetic import write_bundle

    if request.param == "cython" and not compiled_available():
        pytest.skip("compiled kernels not built")
    work = tmp_path_factory.mktemp(f"notebook-{request.param}")
    bundle = write_bundle(work / "bundle", num_train=200, num_val=40)
    env = dict(os.environ, CAPTIONKIT_DATA_DIR=str(bundle), MPLBACKEND="Agg", CAPTIONKIT_BACKEND=request.param)
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=work, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout, work


def _values(output, label):
    return [float(v) for v in re.findall(rf"^{re.escape(label)}:\s+(\S+)$", output, flags=re.M)]


@pytest.mark.slow
@pytest.mark.parametrize("label, occurrence, bound", BOUNDS)
def test_printed_error_within_the_notebooks_bound(notebook_output, label, occurrence, bound):
    assert _values(notebook_output[0], label)[occurrence] < bound


@pytest.mark.slow
def test_softmax_sanity_values_and_model_gradients(notebook_output):
    output = notebook_output[0]
    # check_loss draws from np.random exactly as the notebook does, so its values are the notebook's to the digit.
    assert "2.3027781774290146\n23.025985953127226\n2.2643611790293394\n" in output
    grads = dict(re.findall(r"^(\w+) relative error: (\S+)$", output, flags=re.M))
    assert sorted(grads) == ["W_embed", "W_proj", "W_vocab", "Wh", "Wx", "b", "b_proj", "b_vocab"]
    assert all(float(e) < 1e-5 for e in grads.values()), grads


@pytest.mark.slow
def test_overfit_cell_trains_and_figures_are_drawn(notebook_output):
    output, work = notebook_output
    losses = [float(v) for v in re.findall(r"^\(Iteration \d+ / 100\) loss: (\S+)$", output, flags=re.M)]
    assert len(losses) == 10 and losses[-1] < losses[0] / 5
    assert len(list(work.glob("seed_notebook_*.png"))) >= 5

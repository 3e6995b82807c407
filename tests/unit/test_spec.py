"""ModelSpec: field validation, the checkpoint record round trip, parameter shapes and the one fit check."""
import json

import numpy as np
import pytest

from captionkit import CaptioningRNN
from captionkit.cells import get_cell
from captionkit.model import parameter_shapes
from captionkit.spec import ModelSpec, SpecMismatch

VECTOR = ModelSpec(cell_type="rnn", feature_shape=(16,), wordvec_dim=8, hidden_dim=12, vocab_size=30)
WORDS = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "cat"]


def test_fields_are_normalised_and_frozen():
    spec = ModelSpec("lstm", [np.int64(5), 7], np.int32(3), 4, 9, np.float64)
    assert spec.feature_shape == (5, 7) and spec.feature_dim == 7 and spec.dtype == "float64"
    assert spec.numpy_dtype is np.float64 and type(spec.wordvec_dim) is int
    with pytest.raises(AttributeError):
        spec.hidden_dim = 5


@pytest.mark.parametrize("change, match", [
    ({"cell_type": ""}, "cell_type must be a non-empty string"),
    ({"feature_shape": 16}, r"feature_shape must be \(D,\) or \(L, D\)"),
    ({"feature_shape": (2, 3, 4)}, r"feature_shape must be \(D,\) or \(L, D\)"),
    ({"feature_shape": (0,)}, r"feature_shape\[0\] must be a positive integer"),
    ({"wordvec_dim": 0}, "wordvec_dim must be a positive integer"),
    ({"hidden_dim": True}, "hidden_dim must be a positive integer"),
    ({"vocab_size": 2.0}, "vocab_size must be a positive integer"),
    ({"dtype": np.int32}, "dtype must be float32 or float64, got int32"),
    ({"dtype": "nonsense"}, "dtype must be float32 or float64"),
])
def test_bad_fields_are_named(change, match):
    fields = {"cell_type": "rnn", "feature_shape": (16,), "wordvec_dim": 8, "hidden_dim": 12, "vocab_size": 30,
              **change}
    with pytest.raises(ValueError, match=match):
        ModelSpec(**fields)


def test_a_vector_spec_writes_todays_model_record_and_reads_it_back():
    meta = VECTOR.to_meta()
    assert json.dumps(meta) == ('{"cell_type": "rnn", "input_dim": 16, "wordvec_dim": 8, "hidden_dim": 12, '
                                '"dtype": "float32"}')
    assert ModelSpec.from_meta(meta, 30, "f.npz") == VECTOR


def test_a_grid_spec_adds_its_shape_and_round_trips():
    grid = ModelSpec("rnn", (49, 16), 8, 12, 30)
    meta = grid.to_meta()
    assert meta["input_dim"] == 16 and meta["feature_shape"] == [49, 16]
    assert ModelSpec.from_meta(json.loads(json.dumps(meta)), 30, "f.npz") == grid


@pytest.mark.parametrize("change, match", [
    ({"hidden_dim": 0}, r"f\.npz: meta 'model\.hidden_dim' is 0, expected an integer >= 1"),
    ({"cell_type": 3}, r"f\.npz: meta 'model\.cell_type' is 3, expected a string"),
    ({"dtype": "float16"}, r"f\.npz: meta 'model\.dtype' is 'float16', expected float32 or float64"),
    ({"feature_shape": [4, 15]}, r"f\.npz: meta 'model\.feature_shape' is \[4, 15\]"),
])
def test_from_meta_names_the_file_and_key(change, match):
    with pytest.raises(ValueError, match=match):
        ModelSpec.from_meta({**VECTOR.to_meta(), **change}, 30, "f.npz")
    with pytest.raises(ValueError, match=r"f\.npz: 'meta' has no 'model' object"):
        ModelSpec.from_meta(None, 30, "f.npz")


@pytest.mark.parametrize("cell_type, cell_shapes", [
    ("rnn", {"Wx": (8, 12), "Wh": (12, 12), "b": (12,)}),
    ("lstm", {"Wx": (8, 48), "Wh": (12, 48), "b": (48,)}),
])
def test_parameter_shapes_are_the_models(cell_type, cell_shapes):
    spec = ModelSpec(cell_type, (16,), 8, 12, 30)
    cell = get_cell(cell_type)()
    expected = {"W_embed": (30, 8), "W_proj": (16, 12), "b_proj": (12,), **cell_shapes, "W_vocab": (12, 30),
                "b_vocab": (30,)}
    shapes = spec.parameter_shapes(cell)
    assert shapes == expected and list(shapes) == list(expected)
    assert parameter_shapes(cell, 16, 8, 12, 30) == expected  # the old name still answers
    model = CaptioningRNN({w: i for i, w in enumerate(WORDS)}, input_dim=16, wordvec_dim=8, hidden_dim=12,
                          cell_type=cell_type)
    assert {name: value.shape for name, value in model.params.items()} == model.spec.parameter_shapes(cell)


def test_the_model_exposes_the_spec_of_its_arguments():
    model = CaptioningRNN({w: i for i, w in enumerate(WORDS)}, input_dim=16, wordvec_dim=8, hidden_dim=12,
                          dtype=np.float64)
    assert model.spec == ModelSpec("rnn", (16,), 8, 12, len(WORDS), "float64")
    assert (model.input_dim, model.wordvec_dim, model.hidden_dim, model.vocab_size) == (16, 8, 12, len(WORDS))


def test_describe_names_every_size():
    assert VECTOR.describe() == "cell 'rnn' with input_dim=16, wordvec_dim=8, hidden_dim=12 and 30 words"
    assert "feature_shape=(49, 16)" in ModelSpec("rnn", (49, 16), 8, 12, 30).describe()


def test_check_features_takes_the_specs_shape_only():
    out = VECTOR.check_features(np.ones((3, 16), dtype=np.float64))
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == (3, 16)
    with pytest.raises(ValueError, match=r"features must have shape \(N, 16\), got \(3, 15\)"):
        VECTOR.check_features(np.ones((3, 15)))
    with pytest.raises(ValueError, match=r"features must have shape \(N, 4, 16\), got \(3, 16\)"):
        ModelSpec("rnn", (4, 16), 8, 12, 30).check_features(np.ones((3, 16)))
    with pytest.raises(TypeError, match="features must be numeric"):
        VECTOR.check_features(np.full((3, 16), "x"))


def test_fits_names_the_first_difference():
    VECTOR.fits(other=VECTOR, words=WORDS, own_words=list(WORDS), feature_shape=(16,))  # nothing differs
    with pytest.raises(SpecMismatch, match=r"^the checkpoint has hidden_dim=12, but this run needs hidden_dim=13$") \
            as caught:
        VECTOR.fits(other=ModelSpec("rnn", (16,), 8, 13, 30), model="the checkpoint")
    assert (caught.value.field, caught.value.expected, caught.value.found) == ("hidden_dim", 12, 13)
    with pytest.raises(SpecMismatch, match=r"model has input_dim=16, but this run needs input_dim=20"):
        VECTOR.fits(other=ModelSpec("rnn", (20,), 8, 12, 30))
    with pytest.raises(SpecMismatch, match=r"^the dataset's vocabulary differs from the model's \(6 words in the "
                                           r"model, 5 in the dataset\)$"):
        VECTOR.fits(words=WORDS[:5], own_words=WORDS, feature_shape=(99,))  # the vocabulary is checked first
    with pytest.raises(SpecMismatch, match=r"\(word 5 is 'cat' in the model but 'dog' in the dataset\)"):
        VECTOR.fits(words=WORDS[:5] + ["dog"], own_words=WORDS)
    with pytest.raises(SpecMismatch, match=r"^the val features have width 6 but the model takes 16$") as caught:
        VECTOR.fits(feature_shape=(6,), features="the val features")
    assert caught.value.field == "feature_shape"
    with pytest.raises(SpecMismatch, match=r"have shape \(4, 16\) per image but the model takes \(16,\)"):
        VECTOR.fits(feature_shape=(4, 16))

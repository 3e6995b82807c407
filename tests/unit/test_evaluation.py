"""captionkit.evaluation: perplexity against step-by-step numpy layers and the model's loss; corpus metrics against
captionkit.metrics.score on references grouped here; image selection and errors."""
import numpy as np
import pytest

from captionkit import CaptioningRNN, layers
from captionkit.data import decode_captions
from captionkit.evaluation import evaluate, perplexity, sample_captions
from captionkit.metrics import score

WORDS = ["<NULL>", "<START>", "<END>", "<UNK>"] + [f"w{i}" for i in range(6)]
WORD_TO_IDX = {w: i for i, w in enumerate(WORDS)}
NULL, START, END = 0, 1, 2


def tiny_data(num_images=6, per_image=3, width=8, feature_dim=6, seed=0):
    """A val split in load_coco_data's layout: captions of 1 to 5 words, ``per_image`` per image, shuffled."""
    rng = np.random.RandomState(seed)
    captions = np.zeros((num_images * per_image, width), dtype=np.int32)
    for row in captions:
        length = rng.randint(1, width - 2)
        row[0], row[length + 1] = START, END
        row[1:length + 1] = rng.randint(4, len(WORDS), size=length)
    order = rng.permutation(num_images * per_image)
    return {
        "val_captions": captions[order],
        "val_image_idxs": np.repeat(np.arange(num_images, dtype=np.int32), per_image)[order],
        "val_features": rng.randn(num_images, feature_dim),
        "val_urls": np.array([f"http://example.org/{i}.jpg" for i in range(num_images)]),
        "idx_to_word": list(WORDS),
        "word_to_idx": dict(WORD_TO_IDX),
    }


def tiny_model(seed=0, dtype=np.float64, feature_dim=6):
    model = CaptioningRNN(dict(WORD_TO_IDX), input_dim=feature_dim, wordvec_dim=5, hidden_dim=7, dtype=dtype,
                          seed=seed)
    model.params["W_vocab"] *= 3  # far from uniform, so a wrong target or mask changes the result
    return model


def stepwise_perplexity(model, data):
    """exp(mean NLL per non-NULL target word), one caption and one time step at a time with layers.*_forward."""
    p = model.params
    total, count = 0.0, 0
    for caption, image in zip(data["val_captions"], data["val_image_idxs"]):
        h, _ = layers.affine_forward(data["val_features"][image][None], p["W_proj"], p["b_proj"])
        for t in range(len(caption) - 1):
            x, _ = layers.word_embedding_forward(caption[None, t:t + 1], p["W_embed"])
            h, _ = layers.rnn_step_forward(x[:, 0], h, p["Wx"], p["Wh"], p["b"])
            scores, _ = layers.affine_forward(h, p["W_vocab"], p["b_vocab"])
            probs = np.exp(scores[0] - scores[0].max())
            probs /= probs.sum()
            if caption[t + 1] != NULL:
                total -= np.log(probs[caption[t + 1]])
                count += 1
    return np.exp(total / count), count


def plain_text(rows):
    """Caption rows -> strings without <START>/<END> (decode_captions keeps them and drops <NULL>)."""
    return [" ".join(w for w in text.split() if w not in ("<START>", "<END>")) for text in
            decode_captions(rows, WORDS)]


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_perplexity_matches_a_step_by_step_computation(batch_size):
    model, data = tiny_model(), tiny_data()
    expected, count = stepwise_perplexity(model, data)
    result = perplexity(model, data, batch_size=batch_size)
    assert result["tokens"] == count == np.count_nonzero(data["val_captions"][:, 1:])
    assert result["captions"] == 18
    assert result["perplexity"] == pytest.approx(expected, rel=1e-12)


def test_total_nll_matches_the_training_loss():
    model, data = tiny_model(seed=3), tiny_data(seed=3)
    loss, _ = model.loss(data["val_features"][data["val_image_idxs"]], data["val_captions"])
    nll = model.caption_nll(data["val_features"][data["val_image_idxs"]], data["val_captions"])
    assert nll.shape == (18,) and (nll > 0).all()
    assert nll.sum() == pytest.approx(loss * 18, rel=1e-12)  # the loss averages the summed NLL over captions
    assert perplexity(model, data)["nll"] == pytest.approx(loss * 18, rel=1e-12)


def test_a_uniform_model_has_the_vocabulary_size_as_perplexity():
    model, data = tiny_model(dtype=np.float32), tiny_data()
    model.params["W_vocab"][:] = 0
    assert perplexity(model, data)["perplexity"] == pytest.approx(len(WORDS), rel=1e-6)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_metrics_score_every_image_against_all_its_references(beam_size):
    model, data = tiny_model(seed=1), tiny_data(seed=1)
    result = evaluate(model, data, beam_size=beam_size, batch_size=4)

    references = {}
    for text, image in zip(plain_text(data["val_captions"]), data["val_image_idxs"]):
        references.setdefault(int(image), []).append(text)
    generated = plain_text(model.sample(data["val_features"], max_length=7, beam_size=beam_size))
    expected = score(references, dict(enumerate(generated)))
    for name, value in expected.items():
        assert result[name] == value
    assert result["perplexity"] == pytest.approx(stepwise_perplexity(model, data)[0], rel=1e-12)
    assert (result["images"], result["captions"], result["beam_size"], result["max_length"]) == (6, 18, beam_size, 7)


def test_a_hypothesis_equal_to_any_one_reference_scores_perfect_rouge():
    # One image with three references; the model (W_vocab set by hand, one-hot hidden states) always says
    # "w0 w1 <END>", which matches only the second reference. ROUGE-L takes the best reference, so it is 1.0
    # exactly when all three are used.
    data = tiny_data(num_images=1, per_image=3)
    data["val_captions"][:] = NULL
    for row, words in zip(data["val_captions"], (["w1", "w1"], ["w0", "w1"], ["w1", "w0"])):
        row[:4] = [START, WORD_TO_IDX[words[0]], WORD_TO_IDX[words[1]], END]
    model = CaptioningRNN(dict(WORD_TO_IDX), input_dim=6, wordvec_dim=10, hidden_dim=10, dtype=np.float64, seed=0)
    V = len(WORDS)
    table = np.full((V, V), -20.0)
    table[START, WORD_TO_IDX["w0"]] = table[WORD_TO_IDX["w0"], WORD_TO_IDX["w1"]] = 0.0
    table[WORD_TO_IDX["w1"], END] = 0.0
    model.params.update(W_embed=np.eye(V), Wx=40 * np.eye(V), Wh=np.zeros((V, V)), W_vocab=table)
    result = evaluate(model, data)
    assert result["ROUGE-L"] == pytest.approx(1.0)
    assert result["BLEU-1"] == pytest.approx(1.0) and result["BLEU-2"] == pytest.approx(1.0)


def test_max_images_takes_the_first_images_for_both_perplexity_and_metrics():
    model, data = tiny_model(), tiny_data()
    result = evaluate(model, data, max_images=2)
    assert (result["images"], result["captions"]) == (2, 6)
    keep = data["val_image_idxs"] < 2
    subset = dict(data, val_captions=data["val_captions"][keep], val_image_idxs=data["val_image_idxs"][keep])
    assert result["perplexity"] == pytest.approx(stepwise_perplexity(model, subset)[0], rel=1e-12)


def test_sample_captions_are_reproducible_and_carry_all_references():
    model, data = tiny_model(), tiny_data()
    first = sample_captions(model, data, num=4, seed=7, beam_size=2)
    assert first == sample_captions(model, data, num=4, seed=7, beam_size=2)
    assert [s["image"] for s in first] == sorted({s["image"] for s in first}) and len(first) == 4
    for sample in first:
        rows = data["val_captions"][data["val_image_idxs"] == sample["image"]]
        assert sample["references"] == plain_text(rows)
        assert sample["url"] == f"http://example.org/{sample['image']}.jpg"
        caption = model.sample(data["val_features"][[sample["image"]]], max_length=7, beam_size=2)
        assert sample["generated"] == plain_text(caption)[0]
    assert len(sample_captions(model, data, num=50, seed=0)) == 6  # all images when asking for more


def test_mismatched_model_and_data_are_named():
    data = tiny_data()
    with pytest.raises(ValueError, match="vocabulary"):
        evaluate(CaptioningRNN({**WORD_TO_IDX, "extra": len(WORDS)}, input_dim=6, seed=0), data)
    with pytest.raises(ValueError, match="features have width 6 but the model takes 4"):
        evaluate(tiny_model(feature_dim=4), data)
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate(tiny_model(), data, split="dev")
    with pytest.raises(ValueError, match=r"the dataset has no test split \(it has val\)"):
        evaluate(tiny_model(), data, split="test")
    with pytest.raises(ValueError, match=r"the dataset has no train split \(it has val\)"):
        perplexity(tiny_model(), data, split="train")


@pytest.mark.parametrize("kwargs, message", [
    ({"max_images": 0}, "max_images must be a positive integer or None"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"max_length": -1}, "max_length must be a positive integer"),
    ({"beam_size": 0}, "beam_size must be a positive integer"),
])
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        evaluate(tiny_model(), tiny_data(), **kwargs)


def test_an_empty_split_is_an_error():
    data = tiny_data()
    data.update(val_captions=data["val_captions"][:0], val_image_idxs=data["val_image_idxs"][:0])
    with pytest.raises(ValueError, match="no captions to evaluate"):
        evaluate(tiny_model(), data)

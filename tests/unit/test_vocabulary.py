"""captionkit.vocabulary: the special tokens, the one check, the one ids -> text rule."""
import json

import pytest

from captionkit.data import BundleError, decode_captions
from captionkit.evaluation import caption_text as scored_text
from captionkit.vocabulary import END, NULL, SPECIAL_TOKENS, START, UNK, Vocabulary, caption_text

WORDS = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "cat", "sits"]


def test_special_tokens_are_fixed_and_read_only():
    assert dict(SPECIAL_TOKENS) == {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3}
    assert (NULL, START, END, UNK) == ("<NULL>", "<START>", "<END>", "<UNK>")
    with pytest.raises(TypeError):
        SPECIAL_TOKENS["<NULL>"] = 5


def test_vocabulary_from_either_half_is_the_same():
    by_list = Vocabulary(WORDS)
    by_dict = Vocabulary.from_word_to_idx({w: i for i, w in reversed(list(enumerate(WORDS)))})
    assert by_list == by_dict and hash(by_list) == hash(by_dict)
    assert by_list.idx_to_word == WORDS and by_list.word_to_idx == {"<NULL>": 0, "<START>": 1, "<END>": 2,
                                                                     "<UNK>": 3, "a": 4, "cat": 5, "sits": 6}
    assert (by_list.null, by_list.start, by_list.end, by_list.unknown) == (0, 1, 2, 3)
    assert len(by_list) == 7 and by_list.ids(["cat", "dog", "a"]) == [5, 3, 4]


def test_vocabulary_cannot_be_changed_through_its_lists():
    vocab = Vocabulary(WORDS)
    vocab.idx_to_word.append("dog")
    vocab.word_to_idx["dog"] = 7
    assert len(vocab) == 7 and "dog" not in vocab.word_to_idx
    with pytest.raises(AttributeError):
        vocab.extra = 1


def test_with_words_puts_the_special_tokens_first():
    assert Vocabulary.with_words(["b", "a"]).idx_to_word == ["<NULL>", "<START>", "<END>", "<UNK>", "b", "a"]
    with pytest.raises(ValueError, match=r"lists 'a' twice, at 4 and 5"):
        Vocabulary.with_words(["a", "a"])


@pytest.mark.parametrize("idx_to_word, pattern", [
    ("abc", r"f\.json: 'idx_to_word' must be a list of strings"),
    ([*WORDS, 7], r"f\.json: 'idx_to_word' must be a list of strings"),
    ([*WORDS, "cat"], r"f\.json: 'idx_to_word' lists 'cat' twice, at 5 and 7"),
    (["<NULL>", "<START>", "<FIN>", "<UNK>", "a"],
     r"f\.json: the vocabulary must map <END> to 2, found no entry; 'idx_to_word'\[2\] must be <END>"),
    (["<NULL>", "<START>", "<UNK>", "<END>"], r"must map <END> to 2, found 3"),
    (["<NULL>"], r"must map <START> to 1, found no entry"),
])
def test_a_bad_vocabulary_is_named_with_its_position(idx_to_word, pattern):
    with pytest.raises(BundleError, match=pattern):
        Vocabulary(idx_to_word, source="f.json", error=BundleError)


def test_word_to_idx_must_number_every_word_once():
    with pytest.raises(ValueError, match=r"v: 'word_to_idx' maps 'b' to 0; ids must be 0 to 1, each used once"):
        Vocabulary.from_word_to_idx({"a": 0, "b": 0}, source="v")
    with pytest.raises(ValueError, match=r"'word_to_idx' must map words to integer ids"):
        Vocabulary.from_word_to_idx({"a": True}, source="v")


def test_document_round_trips_and_its_halves_must_agree():
    vocab = Vocabulary([*WORDS, "café"])
    text = vocab.document()
    assert "café" in text  # UTF-8, not \u escapes
    assert Vocabulary.from_document(json.loads(text)) == vocab
    document = json.loads(text)
    document["word_to_idx"]["cat"] = 4
    with pytest.raises(ValueError, match=r"'word_to_idx' maps 'cat' to 4, but 'idx_to_word'\[4\] is 'a'"):
        Vocabulary.from_document(document, source="v")
    del document["word_to_idx"]
    with pytest.raises(ValueError, match=r"v: expected a JSON object with keys 'idx_to_word' and 'word_to_idx'"):
        Vocabulary.from_document(document, source="v")


def test_text_keeps_or_drops_the_boundaries_by_name():
    ids = [1, 4, 0, 5, 6, 2, 5, 0]  # <START> a <NULL> cat sits <END> cat <NULL>
    assert caption_text(ids, WORDS, keep_boundaries=True) == "<START> a cat sits <END>"
    assert caption_text(ids, WORDS) == "a cat sits"
    assert Vocabulary(WORDS).text(ids) == "a cat sits"
    assert Vocabulary(WORDS).text(ids, keep_boundaries=True) == "<START> a cat sits <END>"
    assert caption_text([3, 5], WORDS) == "<UNK> cat"  # <UNK> is a word of the caption


def test_decode_captions_and_caption_text_keep_their_rules():
    rows = [[1, 4, 5, 2, 0], [1, 6, 0, 0, 0]]
    assert decode_captions(rows, WORDS) == ["<START> a cat <END>", "<START> sits"]
    assert decode_captions(rows[0], dict(enumerate(WORDS))) == "<START> a cat <END>"
    assert [scored_text(row, WORDS) for row in rows] == ["a cat", "sits"]
    # decode_captions checks nothing of the vocabulary it is given, as in the assignment
    assert decode_captions([0, 1, 2], ["<NULL>", "x", "<END>"]) == "x <END>"


def test_caption_words_give_each_word_its_decoding_step():
    from captionkit.vocabulary import caption_words

    words = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "cat"]
    ids = [4, 0, 1, 5, 2, 4]
    assert caption_words(ids, words) == [(0, "a"), (3, "cat")]
    assert caption_words(ids, words, keep_boundaries=True) == [(0, "a"), (2, "<START>"), (3, "cat"), (4, "<END>")]
    assert caption_words([], words) == []

"""A captioning vocabulary: the special tokens and their ids, the one check every reader and writer applies, and
the one rule turning word ids back into text.

Every vocabulary captionkit reads or writes (a bundle's ``vocab.json``, a checkpoint's ``idx_to_word``, one being
written by ``data import`` or the built-in dataset) starts with the special tokens, ``<NULL>`` = 0 (padding),
``<START>`` = 1, ``<END>`` = 2 and ``<UNK>`` = 3 (a word outside the vocabulary), and lists every word once.
"""
import json
import types

__all__ = ["END", "NULL", "SPECIAL_TOKENS", "START", "UNK", "Vocabulary", "caption_text", "caption_words"]

NULL, START, END, UNK = "<NULL>", "<START>", "<END>", "<UNK>"
# A read-only mapping, so that no caller can renumber the tokens for everyone else.
SPECIAL_TOKENS = types.MappingProxyType({NULL: 0, START: 1, END: 2, UNK: 3})
_SPECIAL_WORDS = tuple(SPECIAL_TOKENS)  # in id order


def caption_words(ids, idx_to_word, keep_boundaries=False):
    """Word ids of one caption (T,) -> ``[(t, word), ...]``: each word read up to the first ``<END>`` with its
    position t in ``ids`` (the decoding step that chose it).

    ``<NULL>`` is always dropped. ``keep_boundaries=False`` (evaluation's rule: the text that is scored) drops
    ``<START>`` and ``<END>`` as well; ``keep_boundaries=True`` (the assignment's ``decode_captions``) keeps them.
    ``idx_to_word`` is any id -> word lookup (a list, or a dict from id to word); it is not checked here, so the
    assignment's function keeps accepting whatever vocabulary it is given.
    """
    words = []
    for t, idx in enumerate(ids):
        word = idx_to_word[int(idx)]
        if word == END:
            if keep_boundaries:
                words.append((t, word))
            break
        if word == NULL or (word == START and not keep_boundaries):
            continue
        words.append((t, word))
    return words


def caption_text(ids, idx_to_word, keep_boundaries=False):
    """The words of :func:`caption_words` joined by spaces."""
    return " ".join(word for _, word in caption_words(ids, idx_to_word, keep_boundaries))


class Vocabulary:
    """An immutable, checked vocabulary: ``idx_to_word[i]`` is word i, the special tokens first.

    Build it from a list (``Vocabulary(idx_to_word, ...)``), from a word -> id mapping
    (:meth:`from_word_to_idx`) or from a ``vocab.json`` document (:meth:`from_document`). A vocabulary that
    breaks the rules raises ``error`` (ValueError, or the caller's subclass of it, such as ``BundleError``) in one
    line naming ``source`` (the file) and ``key`` (where in it the words are) and the offending position or word.
    """

    __slots__ = ("_words", "_ids")

    def __init__(self, idx_to_word, source="vocabulary", key="'idx_to_word'", error=ValueError):
        if not isinstance(idx_to_word, (list, tuple)) or not all(isinstance(w, str) for w in idx_to_word):
            raise error(f"{source}: {key} must be a list of strings")
        ids = {}
        for idx, word in enumerate(idx_to_word):
            if word in ids:
                raise error(f"{source}: {key} lists {word!r} twice, at {ids[word]} and {idx}")
            ids[word] = idx
        for token, idx in SPECIAL_TOKENS.items():
            if ids.get(token) != idx:
                found = ids.get(token, "no entry")
                raise error(f"{source}: the vocabulary must map {token} to {idx}, found {found}; "
                            f"{key}[{idx}] must be {token}")
        self._words = tuple(idx_to_word)
        self._ids = types.MappingProxyType(ids)

    @classmethod
    def from_word_to_idx(cls, word_to_idx, source="vocabulary", key="'word_to_idx'", error=ValueError):
        """The vocabulary whose ids ``word_to_idx`` gives: they must be exactly 0 .. len - 1, each used once."""
        if not isinstance(word_to_idx, dict) or not all(
                isinstance(w, str) and isinstance(i, int) and not isinstance(i, bool) for w, i in word_to_idx.items()):
            raise error(f"{source}: {key} must map words to integer ids")
        idx_to_word = [None] * len(word_to_idx)
        for word, idx in word_to_idx.items():
            if not 0 <= idx < len(idx_to_word) or idx_to_word[idx] is not None:
                raise error(f"{source}: {key} maps {word!r} to {idx}; ids must be 0 to {len(idx_to_word) - 1}, "
                            "each used once")
            idx_to_word[idx] = word
        return cls(idx_to_word, source, key, error)

    @classmethod
    def from_document(cls, document, source="vocabulary", error=ValueError):
        """The vocabulary of a ``vocab.json`` document, ``{"idx_to_word": [...], "word_to_idx": {...}}``, once
        its two halves are shown to agree."""
        if not isinstance(document, dict) or not {"idx_to_word", "word_to_idx"} <= set(document):
            raise error(f"{source}: expected a JSON object with keys 'idx_to_word' and 'word_to_idx'")
        idx_to_word, word_to_idx = document["idx_to_word"], document["word_to_idx"]
        if not isinstance(idx_to_word, list) or not all(isinstance(w, str) for w in idx_to_word):
            raise error(f"{source}: 'idx_to_word' must be a list of strings")
        if not isinstance(word_to_idx, dict) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in word_to_idx.values()):
            raise error(f"{source}: 'word_to_idx' must map words to integer ids")
        for word, idx in word_to_idx.items():
            if not 0 <= idx < len(idx_to_word) or idx_to_word[idx] != word:
                found = repr(idx_to_word[idx]) if 0 <= idx < len(idx_to_word) else "out of range"
                raise error(f"{source}: 'word_to_idx' maps {word!r} to {idx}, but 'idx_to_word'[{idx}] is {found}")
        if len(word_to_idx) != len(idx_to_word):
            raise error(f"{source}: 'idx_to_word' has {len(idx_to_word)} entries but 'word_to_idx' has "
                        f"{len(word_to_idx)}")
        return cls(idx_to_word, source, "'idx_to_word'", error)

    @staticmethod
    def with_words(words):
        """The special tokens followed by ``words`` (in their order; a word listed twice is an error)."""
        return Vocabulary([*_SPECIAL_WORDS, *words], source="new vocabulary", key="the word list")

    def document(self):
        """The text of this vocabulary's ``vocab.json`` (UTF-8, both halves, words unescaped)."""
        return json.dumps({"idx_to_word": list(self._words), "word_to_idx": dict(self._ids)}, ensure_ascii=False)

    @property
    def idx_to_word(self):
        """A new list of the words, by id."""
        return list(self._words)

    @property
    def word_to_idx(self):
        """A new dict from word to id."""
        return dict(self._ids)

    @property
    def null(self):
        return SPECIAL_TOKENS[NULL]

    @property
    def start(self):
        return SPECIAL_TOKENS[START]

    @property
    def end(self):
        return SPECIAL_TOKENS[END]

    @property
    def unknown(self):
        return SPECIAL_TOKENS[UNK]

    def ids(self, words):
        """The ids of ``words``, ``<UNK>``'s for a word outside the vocabulary."""
        return [self._ids.get(word, self.unknown) for word in words]

    def text(self, ids, keep_boundaries=False):
        """Word ids of one caption (T,) -> text, by :func:`caption_text`'s rule."""
        return caption_text(ids, self._words, keep_boundaries)

    def __len__(self):
        return len(self._words)

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and self._words == other._words

    def __hash__(self):
        return hash(self._words)

    def __repr__(self):
        return f"Vocabulary({len(self)} words)"

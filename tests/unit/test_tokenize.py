"""captionkit.importing.tokenize: words of every script stay whole.

The expected tokens are written out by hand from each script's rules: a word is its letters with the vowel signs,
viramas and diacritics (combining marks) that belong to them; words are separated by spaces and punctuation (Thai
and Chinese write no spaces between words, so a run of them is one token unless the text separates it).
"""
import pytest

from captionkit.importing import tokenize


@pytest.mark.parametrize("text, words", [
    ("एक कुत्ता पानी", ["एक", "कुत्ता", "पानी"]),                      # Devanagari: virama and vowel signs
    ("दो बिल्लियाँ दौड़ रही हैं।", ["दो", "बिल्लियाँ", "दौड़", "रही", "हैं"]),  # candrabindu, nukta; danda dropped
    ("สุนัข วิ่ง เร็ว", ["สุนัข", "วิ่ง", "เร็ว"]),                     # Thai: above and below vowels, tone marks
    ("كَلْبٌ يَجْرِي، بسرعة", ["كَلْبٌ", "يَجْرِي", "بسرعة"]),            # Arabic: harakat kept; Arabic comma dropped
    ("一只狗 在 草地上跑。", ["一只狗", "在", "草地上跑"]),              # Chinese: runs of Han; 。 dropped
    ("নদীতে নৌকা", ["নদীতে", "নৌকা"]),                                # Bengali
    ("நாய் ஓடுகிறது", ["நாய்", "ஓடுகிறது"]),                         # Tamil: pulli (virama)
    ("می\u200cخواهم", ["می\u200cخواهم"]),                              # Persian: the zero-width non-joiner
    ("A dog's ball, o'clock!", ["a", "dog's", "ball", "o'clock"]),
    ("snake_case 3 dogs", ["snake", "case", "3", "dogs"]),
])
def test_words_of_each_script(text, words):
    assert tokenize(text) == words


def test_decomposed_text_gives_the_composed_words():
    decomposed = "nai\u0308ve cafe\u0301"  # as macOS writes it
    assert tokenize(decomposed) == ["naïve", "café"]
    assert tokenize(decomposed) == tokenize("na\u00efve caf\u00e9")
    assert [len(word) for word in tokenize(decomposed)] == [5, 4]  # composed: one code point per letter


def test_a_mark_with_no_letter_before_it_is_no_word():
    assert tokenize("\u0301 \u093e") == []

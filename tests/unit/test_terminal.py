"""captionkit.cli.terminal.quoted: what reaches a terminal from a user's file name or run value."""
import pytest

from captionkit.cli.terminal import quoted


@pytest.mark.parametrize("raw, shown", [
    ("\x1b]2;pwned\x07.png", "\\x1b]2;pwned\\a.png"),   # sets the window title
    ("\x1b[2J", "\\x1b[2J"),                            # clears the screen
    ("a\tb\nc\rd", "a\\tb\\nc\\rd"),                     # would break PATH<TAB>caption lines
    ("back\\slash", "back\\\\slash"),
    ("\x7f\x85", "\\x7f\\x85"),                          # DEL and a C1 control
    ("abc\u202egnp.exe", "abc\\u202egnp.exe"),           # right-to-left override
])
def test_controls_are_escaped(raw, shown):
    assert quoted(raw) == shown
    assert all(char.isprintable() for char in quoted(raw))


@pytest.mark.parametrize("text", ["photo 1.jpg", "एक कुत्ता पानी", "ภาพถ่าย", "صورة", "照片", "nai\u0308ve", "👩\u200d💻"])
def test_text_of_every_script_is_unchanged(text):
    assert quoted(text) == text


def test_non_strings_are_shown_as_str():
    assert quoted(3.5) == "3.5"

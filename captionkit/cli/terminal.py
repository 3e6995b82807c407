"""Text from users' files made safe for a terminal line, the way `ls -b` and git quote file names.

A file name or a run's value can hold escape sequences (set the window title, clear the screen) or a TAB or newline
that would break the one-record-per-line output scripts read. Every such value passes through `quoted` before it is
printed: control characters and the bidirectional overrides (which reorder what a reader sees) become backslash
escapes, and a backslash itself is doubled so the escaped form reads back unambiguously. Letters of every script,
combining marks and joiners stay as they are.
"""
import unicodedata

_NAMED = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r", "\\": "\\\\"}
# Explicit embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): "Trojan source" reordering.
_BIDI_CONTROLS = frozenset(chr(code) for code in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def _escape(char):
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def quoted(value):
    """``str(value)`` with control characters, bidi controls and backslashes escaped; other text unchanged."""
    text = str(value)
    return "".join(_escape(char) if char in _NAMED or char in _BIDI_CONTROLS or unicodedata.category(char) == "Cc"
                   else char for char in text)

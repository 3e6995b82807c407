"""Replacing files atomically: the names kept from before :mod:`captionkit.safeio`, which now holds them."""
from captionkit.safeio import atomic_write, atomic_write_text

__all__ = ["atomic_write", "atomic_write_text"]

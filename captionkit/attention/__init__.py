"""Attention over a grid of image regions: the mechanism interface, the built-in soft attention and the registry
that maps ``--attention`` names to mechanisms (entry-point group ``captionkit.attention``). See docs/attention.md.
"""
from captionkit.attention.base import AttentionMechanism, AttentionSizes
from captionkit.attention.registry import (
    ENTRY_POINT_GROUP,
    AttentionLoadError,
    AttentionRegistry,
    UnknownAttentionError,
    available_attention,
    get_attention,
    register_attention,
    shape_problem,
)
from captionkit.attention.cell import AttendedCell
from captionkit.attention.penalty import doubly_stochastic_penalty
from captionkit.attention.soft import SoftAttention

__all__ = ["ENTRY_POINT_GROUP", "AttendedCell", "AttentionLoadError", "AttentionMechanism", "AttentionRegistry",
           "AttentionSizes", "SoftAttention", "UnknownAttentionError", "available_attention",
           "doubly_stochastic_penalty", "get_attention", "register_attention", "shape_problem"]

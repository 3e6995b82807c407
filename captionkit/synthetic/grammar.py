"""The caption grammar: every sentence it can say about a scene, sampled for training and matched for checking.

A template is a sentence with slots, e.g. ``{np:0} is {rel:0>1} {np:1}``. Each slot expands, for a given scene and
assignment of its objects to the slot indices, to the phrases that are TRUE there:

- ``{np:i}``       noun phrases naming object i ("a red circle", "a big red disc", "a small red plus sign");
- ``{pos:i}``      where object i is in the picture ("at the top", "near the bottom", "in the middle");
- ``{rel:i>j}``    where object i is relative to object j ("to the left of", "above", "next to", ...);
- ``{rel:i>jk}``   a relation true of i relative to both j and k; ``{rel:ij>k}`` true of both i and j relative to k;
- ``{between:i>jk}`` "between", if i lies between j and k along one axis.

A slot with no true phrase makes the template inapplicable for that assignment. Captions mention objects in one
fixed order, by colour (`canonical_order`: red, orange, yellow, green, blue, purple, white), so slot 0 is the first
of the scene's colours in that order; word order still varies with the template ("to the left of a blue square there
is a red circle"). A fixed mention order lets a recurrent captioner say which object comes next by elimination
instead of having to bind each colour word to its shape. Sampling picks an applicable template uniformly, then a
phrase per slot uniformly.

Checking builds, per scene, one regular expression of all applicable (template, assignment) pairs over EVERY order
of the objects, each slot the alternation of its true phrases: a caption is true of a scene exactly when it matches,
whatever order it names the objects in. Every template mentions every object, so a matching caption is also
complete.
"""
import itertools
import re

from captionkit.synthetic.scenes import COLOURS, IMAGE_SIZE

MAX_WORDS = 15

SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
SHAPE_WORDS = {
    "circle": (("circle",), ("disc",)),
    "square": (("square",),),
    "triangle": (("triangle",),),
    "diamond": (("diamond",),),
    "cross": (("cross",), ("plus", "sign")),
}

# Position zones of an object's centre along one axis (pixels); the gaps between zones are deliberately unnamed so a
# stated position is never borderline.
NEAR_LOW_EDGE = 24.0
CENTRE_ZONE = (27.0, 36.0)
NEAR_HIGH_EDGE = IMAGE_SIZE - 1 - NEAR_LOW_EDGE

# "left" and "right" are kept for relations between objects only: giving them a second, absolute meaning ("on the
# left") left a vanilla RNN unable to learn either within a short training run (about 60% right in both senses).
VERTICAL_PHRASES = {
    "top": (("at", "the", "top"), ("near", "the", "top")),
    "bottom": (("at", "the", "bottom"), ("near", "the", "bottom")),
}
MIDDLE_PHRASES = (("in", "the", "middle"), ("in", "the", "center"))

RELATION_PHRASES = {
    "left": (("to", "the", "left", "of"), ("left", "of")),
    "right": (("to", "the", "right", "of"), ("right", "of")),
    "above": (("above",), ("over",)),
    "below": (("below",), ("under",), ("beneath",)),
    "beside": (("next", "to"), ("beside",)),
}

TEMPLATES = {
    1: (
        "{np:0}",
        "{np:0} {pos:0}",
        "there is {np:0} {pos:0}",
        "{pos:0} there is {np:0}",
        "{np:0} on a dark background",
    ),
    2: (
        "{np:0} {rel:0>1} {np:1}",
        "{np:0} is {rel:0>1} {np:1}",
        "there is {np:0} {rel:0>1} {np:1}",
        "{rel:0>1} {np:1} there is {np:0}",
        "{np:0} with {np:1} {rel:1>0} it",
        "{np:0} and {np:1}",
        "{np:0} {pos:0} and {np:1} {pos:1}",
    ),
    3: (
        "{np:0} {np:1} and {np:2}",
        "{np:0} {rel:0>12} {np:1} and {np:2}",
        "{np:0} and {np:1} {rel:01>2} {np:2}",
        "{np:0} {between:0>12} {np:1} and {np:2}",
        "there are three shapes {np:0} {np:1} and {np:2}",
    ),
}

_SLOT = re.compile(r"\{(np|pos|rel|between):(\d+)(?:>(\d+))?\}")


def _article(next_word):
    return "an" if next_word[0] in "aeiou" else "a"


def noun_phrases(obj):
    """All noun phrases naming obj (tuples of words), with and without its size, e.g. ('a', 'big', 'red', 'disc')."""
    phrases = []
    for noun in SHAPE_WORDS[obj.shape]:
        for size in (None,) + SIZE_WORDS[obj.size]:
            words = ((size,) if size else ()) + (obj.colour,) + noun
            phrases.append((_article(words[0]),) + words)
    return phrases


def _zone(coordinate):
    if coordinate < NEAR_LOW_EDGE:
        return "low"
    if coordinate > NEAR_HIGH_EDGE:
        return "high"
    if CENTRE_ZONE[0] < coordinate < CENTRE_ZONE[1]:
        return "centre"
    return None


def position_phrases(obj):
    """All phrases placing obj in the picture, from its centre's zones along y, and x for the middle (may be empty)."""
    cx, cy = obj.centre
    vertical = {"low": "top", "high": "bottom"}.get(_zone(cy))
    phrases = list(VERTICAL_PHRASES[vertical]) if vertical else []
    if _zone(cx) == "centre" and _zone(cy) == "centre":
        phrases.extend(MIDDLE_PHRASES)
    return phrases


def relations(a, b):
    """Names of the relations true of object a relative to object b, from their bounding boxes."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    apart_x, apart_y = ax1 < bx0 or bx1 < ax0, ay1 < by0 or by1 < ay0
    names = set()
    if ax1 < bx0:
        names.add("left")
    if bx1 < ax0:
        names.add("right")
    if ay1 < by0:
        names.add("above")
    if by1 < ay0:
        names.add("below")
    if apart_x and not apart_y:
        names.add("beside")
    return names


def _between(a, b, c):
    """True if a lies between b and c along x or along y (strictly apart from both)."""
    relations_b, relations_c = relations(a, b), relations(a, c)
    return any(first in relations_b and second in relations_c
               for first, second in (("left", "right"), ("right", "left"), ("above", "below"), ("below", "above")))


def _slot_phrases(kind, first, second, objects):
    """True phrases of one slot, given the objects in template order."""
    if kind == "np":
        return noun_phrases(objects[int(first)])
    if kind == "pos":
        return position_phrases(objects[int(first)])
    subjects, references = [objects[int(i)] for i in first], [objects[int(i)] for i in second]
    if kind == "between":
        return [("between",)] if _between(subjects[0], *references) else []
    common = set.intersection(*(relations(s, r) for s in subjects for r in references))
    return [phrase for name in sorted(common) for phrase in RELATION_PHRASES[name]]


def _expansions(template, objects):
    """Template as a list of parts, each a list of word tuples (literal words have one); None if inapplicable."""
    parts = []
    for token in template.split():
        match = _SLOT.fullmatch(token)
        if match is None:
            parts.append([(token,)])
            continue
        phrases = _slot_phrases(match.group(1), match.group(2), match.group(3), objects)
        if not phrases:
            return None
        parts.append(phrases)
    return parts


def canonical_order(scene):
    """The scene's objects in the order captions mention them: by colour, red orange yellow green blue purple white."""
    colour_rank = {colour: rank for rank, colour in enumerate(COLOURS)}
    return tuple(sorted(scene.objects, key=lambda obj: colour_rank[obj.colour]))


def applicable(scene, any_order=False):
    """(template, parts) pairs applicable to the scene, parts as in `_expansions`.

    Slot indices follow `canonical_order`, or, with any_order, every order of the objects.
    """
    orders = itertools.permutations(scene.objects) if any_order else [canonical_order(scene)]
    result = []
    for order in orders:
        for template in TEMPLATES[len(scene.objects)]:
            parts = _expansions(template, order)
            if parts is not None:
                result.append((template, parts))
    return result


def sample_captions(scene, rng, count=5, max_tries=200):
    """count distinct true captions of the scene (tuples of at most MAX_WORDS words).

    Picks a template uniformly among those applicable with the objects in `canonical_order`, then one phrase per slot.
    """
    options = applicable(scene)
    captions = []
    for _ in range(max_tries):
        _, parts = options[int(rng.integers(len(options)))]
        caption = tuple(word for choices in parts for word in choices[int(rng.integers(len(choices)))])
        if len(caption) <= MAX_WORDS and caption not in captions:
            captions.append(caption)
            if len(captions) == count:
                return captions
    raise RuntimeError(f"could only draw {len(captions)} of {count} distinct captions for scene {scene}")


def truth_pattern(scene):
    """A compiled regular expression matching exactly the captions (space-joined words) true of the scene.

    Any order of the objects counts: a caption is true whether or not it follows the dataset's mention order.
    """
    sentences = []
    for _, parts in applicable(scene, any_order=True):
        pieces = ["(?:" + "|".join(re.escape(" ".join(phrase)) for phrase in choices) + ")" for choices in parts]
        sentences.append(" ".join(pieces))
    return re.compile("|".join(f"(?:{sentence})" for sentence in sentences))


def is_true(caption_words, scene):
    """Whether a caption (sequence of words, no special tokens) is a sentence of the grammar true of the scene."""
    return truth_pattern(scene).fullmatch(" ".join(caption_words)) is not None


def named_object(word, scene):
    """The index in ``scene.objects`` of the object a colour or shape word names ("red", "disc", "plus", "sign"),
    or None when the word is neither or names no object of the scene. No two objects of a scene share a colour or a
    shape, so at most one matches."""
    for k, obj in enumerate(scene.objects):
        if word == obj.colour or any(word in noun for noun in SHAPE_WORDS[obj.shape]):
            return k
    return None


def vocabulary():
    """Every word the grammar can produce, sorted; the special tokens are not included."""
    words = {"a", "an", "between"} | set(COLOURS)
    words.update(word for sizes in SIZE_WORDS.values() for word in sizes)
    for templates in TEMPLATES.values():
        words.update(token for template in templates for token in template.split() if not _SLOT.fullmatch(token))
    phrase_lists = [*SHAPE_WORDS.values(), *VERTICAL_PHRASES.values(),
                    *RELATION_PHRASES.values(), MIDDLE_PHRASES]
    words.update(word for phrases in phrase_lists for phrase in phrases for word in phrase)
    return sorted(words)

"""Random scenes of one to three flat shapes, and their rasterisation to 64x64 RGB pixels.

A scene is pure geometry (shape, colour name, size class, centre, half-extent per object); the same scene always
renders to the same pixels given the same random generator. Layouts are constrained so that every spatial statement
the grammar can make about a scene is clearly true or clearly false (no near-touching boxes, see `sample_scene`).
"""
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 64

# Base RGB of each colour word. Hues sit near the centres of the 30-degree hue bins of the feature extractor
# (red 2, orange 31, yellow 59, green 120, blue 238, purple 276 degrees) so per-object jitter stays inside one bin.
COLOURS = {
    "red": (220, 45, 40),
    "orange": (245, 140, 25),
    "yellow": (230, 225, 30),
    "green": (50, 180, 50),
    "blue": (40, 45, 230),
    "purple": (140, 60, 210),
    "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")

# Half-extent (pixels) ranges of the two size classes; the gap between them keeps "small" and "large" unambiguous
# even across shapes (a large diamond covers more pixels than any small circle).
SIZE_RANGES = {"small": (4.5, 6.5), "large": (10.5, 13.5)}
SQUARE_HALF_SIDE = 0.88  # keeps a square's area close to a circle's of the same half-extent
CROSS_ARM = 0.33  # half-width of a cross's arms
TRIANGLE_BASE = 0.75  # the apex is at v = -1 (up), the flat base at v = +0.75
# Distance from the centre to the left, top, right and bottom edge of each shape, in units of its half-extent.
SHAPE_BOX = {
    "circle": (1.0, 1.0, 1.0, 1.0),
    "square": (SQUARE_HALF_SIDE,) * 4,
    "triangle": (1.0, 1.0, 1.0, TRIANGLE_BASE),
    "diamond": (1.0, 1.0, 1.0, 1.0),
    "cross": (1.0, 1.0, 1.0, 1.0),
}
OBJECT_COUNT_WEIGHTS = (0.25, 0.40, 0.35)  # probabilities of 1, 2 and 3 objects

# Layout rules: every pair of boxes is apart by MIN_SEPARATION on at least one axis, and on each axis the boxes are
# either apart or overlapping by at least AXIS_CLEARANCE, so "left of", "above", "next to" are never borderline.
MIN_SEPARATION = 4.0
AXIS_CLEARANCE = 4.0
BORDER = 1.0
BACKGROUND_LEVELS = (20, 50)  # grey level range of the dark background
BACKGROUND_NOISE = 3.0  # standard deviation of per-pixel background noise
SUPERSAMPLING = 4  # samples per pixel side for anti-aliased edges


@dataclass(frozen=True)
class SceneObject:
    """One shape: its words (shape, colour, size class) and geometry (centre and half-extent in pixels)."""

    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    radius: float

    @property
    def box(self):
        """(x0, y0, x1, y1): the shape's bounding box in pixel coordinates (y grows downwards)."""
        left, top, right, bottom = SHAPE_BOX[self.shape]
        r = self.radius
        return (self.cx - left * r, self.cy - top * r, self.cx + right * r, self.cy + bottom * r)

    @property
    def centre(self):
        """(x, y): centre of the bounding box."""
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2, (y0 + y1) / 2)

    def to_dict(self):
        return {"shape": self.shape, "colour": self.colour, "size": self.size,
                "cx": self.cx, "cy": self.cy, "radius": self.radius}


@dataclass(frozen=True)
class Scene:
    """The objects of one image (distinct colours, distinct shapes) and its background grey level."""

    objects: tuple
    background: int

    def to_dict(self):
        return {"background": self.background, "objects": [obj.to_dict() for obj in self.objects]}

    @classmethod
    def from_dict(cls, record):
        return cls(objects=tuple(SceneObject(**obj) for obj in record["objects"]), background=record["background"])


def _placeable(boxes, placed_boxes):
    """Which candidate boxes (K, 4) keep the layout rules against every already placed box: (K,) bool."""
    ok = np.ones(len(boxes), dtype=bool)
    for other in placed_boxes:
        gap_x = np.maximum(other[0] - boxes[:, 2], boxes[:, 0] - other[2])  # > 0 apart, < 0 overlapping
        gap_y = np.maximum(other[1] - boxes[:, 3], boxes[:, 1] - other[3])
        ok &= np.maximum(gap_x, gap_y) >= MIN_SEPARATION
        ok &= (np.abs(gap_x) >= AXIS_CLEARANCE) & (np.abs(gap_y) >= AXIS_CLEARANCE)
    return ok


def sample_scene(rng, candidates=64):
    """Draw one random scene: 1-3 objects, valid layout (see module docstring).

    rng: numpy.random.Generator. No two objects share a colour or a shape, so either word names one object. Each
    object's centre is the first valid one of `candidates` uniform draws inside the border; a scene too crowded for
    its next object is drawn again from scratch.
    """
    num_objects = int(rng.choice(3, p=OBJECT_COUNT_WEIGHTS)) + 1
    colour_names = list(COLOURS)
    while True:
        colours = rng.choice(len(colour_names), size=num_objects, replace=False)
        shapes = rng.choice(len(SHAPES), size=num_objects, replace=False)
        objects = []
        for colour_index, shape_index in zip(colours, shapes):
            size = ("small", "large")[int(rng.integers(2))]
            shape = SHAPES[int(shape_index)]
            radius = float(rng.uniform(*SIZE_RANGES[size]))
            left, top, right, bottom = (extent * radius for extent in SHAPE_BOX[shape])
            cx = rng.uniform(BORDER + left, IMAGE_SIZE - 1 - BORDER - right, size=candidates)
            cy = rng.uniform(BORDER + top, IMAGE_SIZE - 1 - BORDER - bottom, size=candidates)
            boxes = np.stack([cx - left, cy - top, cx + right, cy + bottom], axis=1)
            valid = np.flatnonzero(_placeable(boxes, [obj.box for obj in objects]))
            if len(valid) == 0:
                break
            first = valid[0]
            objects.append(SceneObject(shape, colour_names[colour_index], size, float(cx[first]), float(cy[first]),
                                       radius))
        if len(objects) == num_objects:
            background = int(rng.integers(BACKGROUND_LEVELS[0], BACKGROUND_LEVELS[1] + 1))
            return Scene(objects=tuple(objects), background=background)


def shape_mask(shape, u, v):
    """Boolean inside-test of a unit shape at normalised coordinates u (right) and v (down), |u|,|v| <= ~1."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= SQUARE_HALF_SIDE
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "triangle":
        return (v <= TRIANGLE_BASE) & (v >= -1.0 + (1.0 + TRIANGLE_BASE) * np.abs(u))
    if shape == "cross":
        return (((np.abs(u) <= CROSS_ARM) & (np.abs(v) <= 1.0))
                | ((np.abs(v) <= CROSS_ARM) & (np.abs(u) <= 1.0)))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _coverage(obj):
    """Fraction of each pixel covered by obj over its bounding pixels: (rows slice, cols slice, alpha (h, w))."""
    x0, y0, x1, y1 = obj.box
    cols = slice(max(int(np.floor(x0)), 0), min(int(np.ceil(x1)) + 1, IMAGE_SIZE))
    rows = slice(max(int(np.floor(y0)), 0), min(int(np.ceil(y1)) + 1, IMAGE_SIZE))
    offsets = (np.arange(SUPERSAMPLING) + 0.5) / SUPERSAMPLING - 0.5
    xs = (np.arange(cols.start, cols.stop)[:, None] + offsets[None, :]).ravel()
    ys = (np.arange(rows.start, rows.stop)[:, None] + offsets[None, :]).ravel()
    inside = shape_mask(obj.shape, (xs[None, :] - obj.cx) / obj.radius, (ys[:, None] - obj.cy) / obj.radius)
    height, width = rows.stop - rows.start, cols.stop - cols.start
    alpha = inside.reshape(height, SUPERSAMPLING, width, SUPERSAMPLING).mean(axis=(1, 3))
    return rows, cols, alpha


def render_scene(scene, rng):
    """Rasterise a scene: (64, 64, 3) uint8, anti-aliased shapes with jittered colour on a noisy dark background.

    rng supplies the background noise and each object's colour jitter (brightness 0.85-1, +-8 per channel).
    """
    canvas = scene.background + BACKGROUND_NOISE * rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE, 1))
    canvas = np.repeat(canvas, 3, axis=2)
    for obj in scene.objects:
        colour = np.array(COLOURS[obj.colour], dtype=np.float64) * rng.uniform(0.85, 1.0)
        colour = colour + rng.uniform(-8, 8, size=3)
        rows, cols, alpha = _coverage(obj)
        patch = canvas[rows, cols]
        canvas[rows, cols] = patch + alpha[:, :, None] * (colour[None, None, :] - patch)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def grid_coverage(scene, grid):
    """Where each object of ``scene`` lies on a ``grid`` x ``grid`` grid of regions over its picture: (objects,
    grid * grid) float64, the object's anti-aliased area inside each region in pixels of the 64x64 picture.

    Regions are numbered row by row from the top left, as the ``shapes`` encoder's grid numbers them, and cut the
    picture where that encoder's cells do (at multiples of 64 / grid pixels, inside a pixel when grid does not divide
    64). Geometry only, no random draws: what a seed generates does not depend on whether this is called.
    """
    edges = np.arange(grid + 1) * (IMAGE_SIZE / grid)
    pixels = np.arange(IMAGE_SIZE, dtype=np.float64)
    # overlap[r, i]: how much of pixel row (or column) i, the interval [i, i + 1), lies in region row (or column) r.
    overlap = np.clip(np.minimum(pixels + 1, edges[1:, None]) - np.maximum(pixels, edges[:-1, None]), 0.0, 1.0)
    coverage = np.empty((len(scene.objects), grid * grid))
    for k, obj in enumerate(scene.objects):
        rows, cols, alpha = _coverage(obj)
        coverage[k] = (overlap[:, rows] @ alpha @ overlap[:, cols].T).ravel()
    return coverage

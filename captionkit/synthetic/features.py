"""A fixed, weight-free image descriptor standing in for the VGG-16 fc7 features of the COCO bundle.

Nothing here is learned: only histogram bins, thresholds and constant scales. `describe` computes the raw descriptor
(RAW_DIM = 1528 values per image) and `pool` reduces it by a fixed linear map to FEATURE_DIM = 512 values.

Per colour channel (12 hue bins of 30 degrees centred on 0, 30, ..., 330, plus one "white" channel; a pixel belongs to
the bin of its hue, weighted by how saturated and bright it is, or to white if bright and unsaturated):
  - coverage of an 8x8 grid of cells; pooled into its column and row profiles (4 + 4 strips)      (where)
  - the centroid x and y                                                                        (where)
  - soft histograms (each value spread linearly over its two nearest bin centres) of:
      sqrt(mass) in pixels, centres 6, 12, 18, 24                                                (size)
      fill ratio of the bounding box, centres 0.5, 0.7, 0.9                                     (shape)
      E[dx^2 dy^2] / (E[dx^2] E[dy^2]), centres 0.35, 0.65, 0.95                                (shape)
  - the share of the other colours' mass entirely left of, right of, above and below its box  (relations)
  - an 8-bin histogram of the directions of the channel's edges, magnitude weighted and normalised (shape)
Over the whole image:
  - a 6-bin histogram of unsigned luminance-edge orientations per cell (gradients above the background noise only):
    8x8 cells raw, 4x4 pooled

Every per-channel value is multiplied by mass / (mass + MASS_HALF), so an absent colour reads as zeros. Soft
histograms rather than raw values let a linear map read off "the blue thing is small" or "... is a square" directly,
which is what the captioning model's affine feature projection can use. `pool` sums the grid into profiles and
averages 2x2 blocks of orientation cells, leaving the other values unchanged: the 512-d features are exactly a fixed
linear projection of the raw ones (as the PCA features of COCO are of the fc7 ones).
"""
import numpy as np

HUE_BINS = 12
NUM_CHANNELS = HUE_BINS + 1
RAW_GRID = 8
POOLED_GRID = 4
SIZE_CENTRES = (6.0, 12.0, 18.0, 24.0)  # sqrt of the channel's mass, in pixels
FILL_CENTRES = (0.5, 0.7, 0.9)
CROSS_MOMENT_CENTRES = (0.35, 0.65, 0.95)
CONTEXT_DIM = 4  # share of the other colours' mass left of, right of, above and below this colour's box
DIRECTION_BINS = 8
ORIENTATION_BINS = 6
SHAPE_DIM = 2 + len(SIZE_CENTRES) + len(FILL_CENTRES) + len(CROSS_MOMENT_CENTRES) + CONTEXT_DIM + DIRECTION_BINS
CHANNEL_RAW_DIM = RAW_GRID * RAW_GRID + SHAPE_DIM
CHANNEL_POOLED_DIM = 2 * POOLED_GRID + SHAPE_DIM
RAW_DIM = NUM_CHANNELS * CHANNEL_RAW_DIM + RAW_GRID * RAW_GRID * ORIENTATION_BINS
FEATURE_DIM = NUM_CHANNELS * CHANNEL_POOLED_DIM + POOLED_GRID * POOLED_GRID * ORIENTATION_BINS

# Membership ramps (on values in [0, 1]): chromatic = saturated and not dark, white = unsaturated and bright.
SATURATION_RAMP = (0.25, 0.45)
VALUE_RAMP = (0.25, 0.45)
WHITE_SATURATION_RAMP = (0.30, 0.15)
WHITE_VALUE_RAMP = (0.60, 0.75)
MASS_HALF = 10.0  # pixels of a colour at which its values are weighted by one half
PROFILE_THRESHOLD = 0.5  # pixels per row/column for that row/column to count in a colour's bounding box
EDGE_THRESHOLD = 0.05  # luminance gradient above the background noise (std 3/255 per pixel) and below any shape edge
# Constant scales bringing each kind of value to roughly unit size for typical scenes.
COVERAGE_SCALE = 2.0
PROFILE_SCALE = 4.0
DIRECTION_SCALE = 4.0
POSITION_SCALE = 3.0  # centroid and context values: spatial words are learned slowly from small inputs
ORIENTATION_SCALE = 16.0
BATCH = 128  # images per vectorised step, bounding memory to ~150 MB
# Bump when anything changes the features of a given picture: recorded by the `shapes` encoder, so a run trained on
# older features is refused rather than fed different ones.
FEATURES_VERSION = 1


def _ramp(values, start, stop):
    return np.clip((values - start) / (stop - start), 0.0, 1.0)


def colour_maps(images):
    """The non-empty soft colour masks of images (B, H, W, 3) uint8.

    Returns (maps (M, H, W) float32, owners (M,) int64) where owners = image index * NUM_CHANNELS + channel, sorted;
    the channels of an image missing from owners are all zero.
    """
    count, height, width = images.shape[:3]
    value_bytes = images.max(axis=-1)
    # Only pixels brighter than both ramps' lower ends can belong to a channel; the dark background is skipped.
    image, rows, cols = np.nonzero(value_bytes > 255 * min(VALUE_RAMP[0], WHITE_VALUE_RAMP[0]))
    rgb = images[image, rows, cols].astype(np.float32) / 255.0
    red, green, blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    value = rgb.max(axis=-1)
    chroma = value - rgb.min(axis=-1)
    saturation = chroma / np.maximum(value, 1e-6)
    safe_chroma = np.maximum(chroma, 1e-6)
    hue = np.where(value == red, (green - blue) / safe_chroma,
                   np.where(value == green, 2.0 + (blue - red) / safe_chroma, 4.0 + (red - green) / safe_chroma))
    hue_bin = np.floor(hue * 60.0 / (360.0 / HUE_BINS) + 0.5).astype(np.int64) % HUE_BINS
    chromatic = _ramp(saturation, *SATURATION_RAMP) * _ramp(value, *VALUE_RAMP)
    white = _ramp(saturation, *WHITE_SATURATION_RAMP) * _ramp(value, *WHITE_VALUE_RAMP)
    memberships = [(image * NUM_CHANNELS + hue_bin, chromatic), (image * NUM_CHANNELS + HUE_BINS, white)]
    owners = np.unique(np.concatenate([channel[weight > 0] for channel, weight in memberships]))
    maps = np.zeros((len(owners), height, width), dtype=np.float32)
    for channel, weight in memberships:
        member = weight > 0
        maps[np.searchsorted(owners, channel[member]), rows[member], cols[member]] = weight[member]
    return maps, owners


def _grid_means(maps, cells):
    """Mean of maps (..., H, W) over a cells x cells grid: (..., cells, cells)."""
    *lead, height, width = maps.shape
    blocks = maps.reshape(*lead, cells, height // cells, cells, width // cells)
    return blocks.mean(axis=(-3, -1))


def soft_histogram(values, centres):
    """Spread each value linearly over its two nearest bin centres (values outside clamp to the end bins).

    values (...,) -> (..., len(centres)); each row sums to 1. Any piecewise-linear function of the value with knots
    at the centres is a linear function of this encoding.
    """
    centres = np.asarray(centres, dtype=np.float64)
    position = np.interp(values, centres, np.arange(len(centres), dtype=np.float64))
    return np.clip(1.0 - np.abs(position[..., None] - np.arange(len(centres))), 0.0, 1.0)


def _shape_values(maps, owners, num_images):
    """Centroid, size, shape histograms, context and edge directions of each map (M, H, W): (M, SHAPE_DIM).

    owners (M,): image index * NUM_CHANNELS + channel of each map, to find the other colours of its image.
    """
    size = maps.shape[-1]
    coords = np.arange(size, dtype=np.float64)
    column_mass = maps.sum(axis=-2, dtype=np.float64)  # (M, W)
    row_mass = maps.sum(axis=-1, dtype=np.float64)  # (M, H)
    mass = column_mass.sum(axis=-1)
    safe_mass = np.maximum(mass, 1e-6)
    mean_x = column_mass @ coords / safe_mass
    mean_y = row_mass @ coords / safe_mass
    dx = coords - mean_x[:, None]  # (M, W)
    dy = coords - mean_y[:, None]  # (M, H)
    var_x = np.maximum((column_mass * dx ** 2).sum(-1) / safe_mass, 1e-6)
    var_y = np.maximum((row_mass * dy ** 2).sum(-1) / safe_mass, 1e-6)
    cross_moment = np.einsum("mhw,mh,mw->m", maps, dy ** 2, dx ** 2, optimize=True) / safe_mass / (var_x * var_y)
    (left, right), (top, bottom) = _extent(column_mass), _extent(row_mass)
    box_area = np.maximum(right - left + 1, 1) * np.maximum(bottom - top + 1, 1)
    context = _context(column_mass, row_mass, (left, right, top, bottom), owners // NUM_CHANNELS, num_images)
    centre = (size - 1) / 2.0
    values = np.concatenate([
        np.stack([(mean_x - centre) / centre, (mean_y - centre) / centre], axis=-1) * POSITION_SCALE,
        soft_histogram(np.sqrt(mass), SIZE_CENTRES),
        soft_histogram(mass / box_area, FILL_CENTRES),
        soft_histogram(cross_moment, CROSS_MOMENT_CENTRES),
        context * POSITION_SCALE,
        _direction_histograms(maps) * DIRECTION_SCALE,
    ], axis=-1)
    return values * (mass / (mass + MASS_HALF))[:, None]


def _context(column_mass, row_mass, box, image, num_images):
    """Share of the other colours' mass (of the same image) entirely left of, right of, above and below each map's
    box: (M, 4). The spatial relation of one colour to the rest, as a linear map can read it."""
    left, right, top, bottom = box
    shares = []
    for profile, low, high in ((column_mass, left, right), (row_mass, top, bottom)):
        image_profile = np.zeros((num_images, profile.shape[1]))
        np.add.at(image_profile, image, profile)
        others = image_profile[image] - profile  # (M, W or H): every other colour of the same picture
        before = np.cumsum(others, axis=-1)  # before[:, k] = others' mass at positions <= k
        total = before[:, -1]
        rows = np.arange(len(profile))
        below_low = np.where(low > 0, before[rows, np.maximum(low - 1, 0)], 0.0)
        above_high = total - before[rows, high]
        scale = 1.0 / (total + MASS_HALF)
        shares.extend([below_low * scale, above_high * scale])
    return np.stack(shares, axis=-1)


def _extent(profile):
    """(first, last) positions with profile > PROFILE_THRESHOLD, each (M,); (0, -1) where none is."""
    above = profile > PROFILE_THRESHOLD
    any_above = above.any(axis=-1)
    first = above.argmax(axis=-1)
    last = profile.shape[-1] - 1 - above[..., ::-1].argmax(axis=-1)
    return np.where(any_above, first, 0), np.where(any_above, last, -1)


def _gradients(maps):
    """Central-difference gradients (gx, gy) of maps (..., H, W), zero at the border."""
    gx = np.zeros_like(maps)
    gy = np.zeros_like(maps)
    gx[..., :, 1:-1] = (maps[..., :, 2:] - maps[..., :, :-2]) / 2
    gy[..., 1:-1, :] = (maps[..., 2:, :] - maps[..., :-2, :]) / 2
    return gx, gy


def _direction_histograms(maps):
    """Magnitude-weighted histogram of edge directions of each map (M, H, W), normalised: (M, DIRECTION_BINS)."""
    gx, gy = _gradients(maps)
    magnitude = np.hypot(gx, gy)
    which, rows, cols = np.nonzero(magnitude > 0)  # bin only the pixels on an edge
    step = 2 * np.pi / DIRECTION_BINS
    bins = np.floor(np.arctan2(gy[which, rows, cols], gx[which, rows, cols]) / step + 0.5).astype(np.int64)
    histogram = np.bincount(which * DIRECTION_BINS + bins % DIRECTION_BINS,
                            weights=magnitude[which, rows, cols], minlength=len(maps) * DIRECTION_BINS)
    histogram = histogram.reshape(len(maps), DIRECTION_BINS)
    return histogram / np.maximum(histogram.sum(-1, keepdims=True), 1e-6)


def _channel_descriptors(maps, owners, num_images):
    """Coverage grid and shape values of each colour map (M, H, W): (M, CHANNEL_RAW_DIM)."""
    coverage = _grid_means(maps, RAW_GRID).reshape(len(maps), -1) * COVERAGE_SCALE
    return np.concatenate([coverage, _shape_values(maps, owners, num_images)], axis=-1)


def _orientation_grid(images):
    """Unsigned luminance-edge orientation histograms per grid cell: (B, RAW_GRID, RAW_GRID, ORIENTATION_BINS).

    Gradients weaker than EDGE_THRESHOLD (the background's noise) are left out.
    """
    count, height, width = images.shape[:3]
    luminance = images.astype(np.float32).mean(axis=-1) / 255.0
    gx, gy = _gradients(luminance)
    magnitude = np.hypot(gx, gy)
    image, rows, cols = np.nonzero(magnitude > EDGE_THRESHOLD)
    step = np.pi / ORIENTATION_BINS
    angle = np.mod(np.arctan2(gy[image, rows, cols], gx[image, rows, cols]), np.pi)
    bins = np.floor(angle / step + 0.5).astype(np.int64) % ORIENTATION_BINS
    cells = (rows // (height // RAW_GRID)) * RAW_GRID + cols // (width // RAW_GRID)
    index = (image * (RAW_GRID * RAW_GRID) + cells) * ORIENTATION_BINS + bins
    sums = np.bincount(index, weights=magnitude[image, rows, cols],
                       minlength=count * RAW_GRID * RAW_GRID * ORIENTATION_BINS)
    pixels_per_cell = (height // RAW_GRID) * (width // RAW_GRID)
    return sums.reshape(count, RAW_GRID, RAW_GRID, ORIENTATION_BINS) / pixels_per_cell * ORIENTATION_SCALE


def _describe_batch(images):
    maps, owners = colour_maps(images)
    per_channel = np.zeros((len(images) * NUM_CHANNELS, CHANNEL_RAW_DIM))  # an empty map describes to zeros
    if len(maps):  # a batch of blank pictures has no colour maps at all: every descriptor stays zero
        per_channel[owners] = _channel_descriptors(maps, owners, len(images))
    orientations = _orientation_grid(images).reshape(len(images), -1)
    return np.concatenate([per_channel.reshape(len(images), -1), orientations], axis=-1).astype(np.float32)


def describe(images):
    """Raw descriptor (N, RAW_DIM) float32 of images (N, 64, 64, 3) uint8; see the module docstring."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (64, 64, 3) or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, 64, 64, 3) uint8, got {images.shape} {images.dtype}")
    out = np.empty((len(images), RAW_DIM), dtype=np.float32)
    for start in range(0, len(images), BATCH):
        out[start:start + BATCH] = _describe_batch(images[start:start + BATCH])
    return out


def pool(raw):
    """Fixed linear projection (N, RAW_DIM) -> (N, FEATURE_DIM): coverage grids to column and row profiles, 2x2
    average pooling of the orientation grid, everything else copied."""
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 2 or raw.shape[1] != RAW_DIM:
        raise ValueError(f"raw descriptors must be (N, {RAW_DIM}), got {raw.shape}")
    count = len(raw)
    factor = RAW_GRID // POOLED_GRID
    per_channel = raw[:, :NUM_CHANNELS * CHANNEL_RAW_DIM].reshape(count, NUM_CHANNELS, CHANNEL_RAW_DIM)
    grids = per_channel[..., :RAW_GRID * RAW_GRID].reshape(count, NUM_CHANNELS, RAW_GRID, POOLED_GRID, factor)
    columns = grids.sum(axis=(2, 4)) / factor * (PROFILE_SCALE / RAW_GRID)  # (count, C, POOLED_GRID) strips
    rows = grids.reshape(count, NUM_CHANNELS, POOLED_GRID, factor, RAW_GRID).sum(axis=(3, 4))
    rows = rows / factor * (PROFILE_SCALE / RAW_GRID)
    channel_part = np.concatenate([columns, rows, per_channel[..., RAW_GRID * RAW_GRID:]], axis=-1)
    orientations = raw[:, NUM_CHANNELS * CHANNEL_RAW_DIM:].reshape(count, RAW_GRID, RAW_GRID, ORIENTATION_BINS)
    blocks = orientations.reshape(count, POOLED_GRID, factor, POOLED_GRID, factor, ORIENTATION_BINS)
    pooled_orientations = blocks.mean(axis=(2, 4))
    return np.concatenate([channel_part.reshape(count, -1), pooled_orientations.reshape(count, -1)], axis=1)


def extract_features(images):
    """The 512-d features (N, FEATURE_DIM) float32 of images (N, 64, 64, 3) uint8: pool(describe(images))."""
    return pool(describe(images))

"""A fixed, weight-free image descriptor standing in for the VGG-16 fc7 features of the COCO bundle.

Nothing here is learned: only histogram bins, thresholds and constant scales. `describe` computes the raw descriptor
(RAW_DIM = 1424 values per image) and `pool` reduces it by a fixed linear map to FEATURE_DIM = 512 values:

Per colour channel (12 hue bins of 30 degrees centred on 0, 30, ..., 330, plus one "white" channel; a pixel belongs to
the bin of its hue, weighted by how saturated and bright it is, or to white if bright and unsaturated):
  - coverage over a spatial grid: 8x8 cells raw, 4x4 after pooling           (where, and how much, of that colour)
  - 8 moments of the channel's mass: sqrt(mass), centroid x and y, spread x and y relative to sqrt(mass), fill ratio
    of its bounding box, vertical skewness, and E[dx^2 dy^2] / (E[dx^2] E[dy^2])        (size, position, shape)
  - an 8-bin histogram of the directions of the channel's edges, magnitude weighted and normalised (shape)
Over the whole image:
  - a 6-bin histogram of unsigned luminance-edge orientations per grid cell: 8x8 cells raw, 4x4 pooled

Shape-only values (spread, fill, skewness, the 4th-order ratio, edge directions) are multiplied by
mass / (mass + MASS_HALF) so that an absent colour reads as zeros. `pool` averages each 2x2 block of grid cells and
leaves the other values unchanged, so the 512-d features are exactly a fixed linear projection of the raw ones (as the
PCA features of COCO are of the fc7 ones).
"""
import numpy as np

HUE_BINS = 12
NUM_CHANNELS = HUE_BINS + 1
RAW_GRID = 8
POOLED_GRID = 4
NUM_MOMENTS = 8
DIRECTION_BINS = 8
ORIENTATION_BINS = 6
CHANNEL_RAW_DIM = RAW_GRID * RAW_GRID + NUM_MOMENTS + DIRECTION_BINS
CHANNEL_POOLED_DIM = POOLED_GRID * POOLED_GRID + NUM_MOMENTS + DIRECTION_BINS
RAW_DIM = NUM_CHANNELS * CHANNEL_RAW_DIM + RAW_GRID * RAW_GRID * ORIENTATION_BINS
FEATURE_DIM = NUM_CHANNELS * CHANNEL_POOLED_DIM + POOLED_GRID * POOLED_GRID * ORIENTATION_BINS

# Membership ramps (on values in [0, 1]): chromatic = saturated and not dark, white = unsaturated and bright.
SATURATION_RAMP = (0.25, 0.45)
VALUE_RAMP = (0.25, 0.45)
WHITE_SATURATION_RAMP = (0.30, 0.15)
WHITE_VALUE_RAMP = (0.60, 0.75)
MASS_HALF = 10.0  # pixels of a colour at which shape values are weighted by one half
PROFILE_THRESHOLD = 0.5  # pixels per row/column for that row/column to count in a colour's bounding box
# Constant scales bringing each kind of value to roughly unit size for typical scenes.
COVERAGE_SCALE = 2.0
MASS_SCALE = 1.0 / 16.0
SPREAD_SCALE = 3.0
DIRECTION_SCALE = 4.0
ORIENTATION_SCALE = 16.0
BATCH = 128  # images per vectorised step, bounding memory to ~150 MB


def _ramp(values, start, stop):
    return np.clip((values - start) / (stop - start), 0.0, 1.0)


def colour_maps(images):
    """The non-empty soft colour masks of images (B, H, W, 3) uint8.

    Returns (maps (M, H, W) float32, owners (M,) int64) where owners = image index * NUM_CHANNELS + channel, sorted;
    the channels of an image missing from owners are all zero.
    """
    count, height, width = images.shape[:3]
    rgb = images.astype(np.float32) / 255.0
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = np.maximum(np.maximum(red, green), blue)
    chroma = value - np.minimum(np.minimum(red, green), blue)
    saturation = chroma / np.maximum(value, 1e-6)
    safe_chroma = np.maximum(chroma, 1e-6)
    hue = np.where(value == red, (green - blue) / safe_chroma,
                   np.where(value == green, 2.0 + (blue - red) / safe_chroma, 4.0 + (red - green) / safe_chroma))
    hue_bin = np.floor(hue * 60.0 / (360.0 / HUE_BINS) + 0.5).astype(np.int64) % HUE_BINS
    chromatic = _ramp(saturation, *SATURATION_RAMP) * _ramp(value, *VALUE_RAMP)
    white = _ramp(saturation, *WHITE_SATURATION_RAMP) * _ramp(value, *WHITE_VALUE_RAMP)
    first_channel = np.arange(count)[:, None, None] * NUM_CHANNELS
    memberships = [(first_channel + hue_bin, chromatic), (first_channel + HUE_BINS + np.zeros_like(hue_bin), white)]
    owners = np.unique(np.concatenate([channel[weight > 0] for channel, weight in memberships]))
    maps = np.zeros((len(owners), height, width), dtype=np.float32)
    for channel, weight in memberships:
        image, rows, cols = np.nonzero(weight > 0)
        slot = np.searchsorted(owners, channel[image, rows, cols])
        maps[slot, rows, cols] = weight[image, rows, cols]
    return maps, owners


def _grid_means(maps, cells):
    """Mean of maps (..., H, W) over a cells x cells grid: (..., cells, cells)."""
    *lead, height, width = maps.shape
    blocks = maps.reshape(*lead, cells, height // cells, cells, width // cells)
    return blocks.mean(axis=(-3, -1))


def _moments(maps):
    """The NUM_MOMENTS mass/position/shape values of each map (M, H, W): (M, NUM_MOMENTS), and its presence (M,)."""
    size = maps.shape[-1]
    coords = np.arange(size, dtype=np.float64)
    column_mass = maps.sum(axis=-2, dtype=np.float64)  # (M, W)
    row_mass = maps.sum(axis=-1, dtype=np.float64)  # (M, H)
    mass = column_mass.sum(axis=-1)
    safe_mass = np.maximum(mass, 1e-6)
    presence = mass / (mass + MASS_HALF)
    mean_x = column_mass @ coords / safe_mass
    mean_y = row_mass @ coords / safe_mass
    dx = coords - mean_x[:, None]  # (M, W)
    dy = coords - mean_y[:, None]  # (M, H)
    var_x = (column_mass * dx ** 2).sum(-1) / safe_mass
    var_y = (row_mass * dy ** 2).sum(-1) / safe_mass
    third_y = (row_mass * dy ** 3).sum(-1) / safe_mass
    cross_fourth = np.einsum("mhw,mh,mw->m", maps, dy ** 2, dx ** 2, optimize=True) / safe_mass
    width = np.maximum(_extent(column_mass), 1)
    height = np.maximum(_extent(row_mass), 1)
    safe_var_x, safe_var_y = np.maximum(var_x, 1e-6), np.maximum(var_y, 1e-6)
    centre = (size - 1) / 2.0
    values = [
        np.sqrt(mass) * MASS_SCALE,
        presence * (mean_x - centre) / centre,
        presence * (mean_y - centre) / centre,
        presence * SPREAD_SCALE * np.sqrt(safe_var_x / safe_mass),
        presence * SPREAD_SCALE * np.sqrt(safe_var_y / safe_mass),
        presence * np.minimum(mass / (width * height), 1.0),
        presence * np.clip(third_y / safe_var_y ** 1.5, -3, 3),
        presence * np.clip(cross_fourth / (safe_var_x * safe_var_y), 0, 3),
    ]
    return np.stack(values, axis=-1), presence


def _extent(profile):
    """Number of positions from the first to the last profile entry above PROFILE_THRESHOLD (0 if none)."""
    above = profile > PROFILE_THRESHOLD
    any_above = above.any(axis=-1)
    first = above.argmax(axis=-1)
    last = profile.shape[-1] - 1 - above[..., ::-1].argmax(axis=-1)
    return np.where(any_above, last - first + 1, 0)


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


def _channel_descriptors(maps):
    """Coverage grid, moments and edge directions of each colour map (M, H, W): (M, CHANNEL_RAW_DIM)."""
    coverage = _grid_means(maps, RAW_GRID).reshape(len(maps), -1) * COVERAGE_SCALE
    moments, presence = _moments(maps)
    directions = _direction_histograms(maps) * presence[:, None] * DIRECTION_SCALE
    return np.concatenate([coverage, moments, directions], axis=-1)


def _orientation_grid(images):
    """Unsigned luminance-edge orientation histograms per grid cell: (B, RAW_GRID, RAW_GRID, ORIENTATION_BINS)."""
    count, height, width = images.shape[:3]
    luminance = images.astype(np.float32).mean(axis=-1) / 255.0
    gx, gy = _gradients(luminance)
    step = np.pi / ORIENTATION_BINS
    bins = np.floor(np.mod(np.arctan2(gy, gx), np.pi) / step + 0.5).astype(np.int64) % ORIENTATION_BINS
    cell_rows = np.arange(height) // (height // RAW_GRID)
    cell_cols = np.arange(width) // (width // RAW_GRID)
    cells = (cell_rows[:, None] * RAW_GRID + cell_cols[None, :]) * ORIENTATION_BINS
    index = np.arange(count)[:, None, None] * (RAW_GRID * RAW_GRID * ORIENTATION_BINS) + cells + bins
    sums = np.bincount(index.ravel(), weights=np.hypot(gx, gy).ravel(),
                       minlength=count * RAW_GRID * RAW_GRID * ORIENTATION_BINS)
    pixels_per_cell = (height // RAW_GRID) * (width // RAW_GRID)
    return sums.reshape(count, RAW_GRID, RAW_GRID, ORIENTATION_BINS) / pixels_per_cell * ORIENTATION_SCALE


def _describe_batch(images):
    maps, owners = colour_maps(images)
    per_channel = np.zeros((len(images) * NUM_CHANNELS, CHANNEL_RAW_DIM))  # an empty map describes to zeros
    per_channel[owners] = _channel_descriptors(maps)
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
    """Fixed linear projection (N, RAW_DIM) -> (N, FEATURE_DIM): 2x2 average pooling of every grid block."""
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 2 or raw.shape[1] != RAW_DIM:
        raise ValueError(f"raw descriptors must be (N, {RAW_DIM}), got {raw.shape}")
    count = len(raw)
    factor = RAW_GRID // POOLED_GRID
    per_channel = raw[:, :NUM_CHANNELS * CHANNEL_RAW_DIM].reshape(count, NUM_CHANNELS, CHANNEL_RAW_DIM)
    grids = per_channel[..., :RAW_GRID * RAW_GRID].reshape(count, NUM_CHANNELS, RAW_GRID, RAW_GRID)
    pooled_grids = _grid_means(grids, POOLED_GRID).reshape(count, NUM_CHANNELS, -1)
    channel_part = np.concatenate([pooled_grids, per_channel[..., RAW_GRID * RAW_GRID:]], axis=-1)
    orientations = raw[:, NUM_CHANNELS * CHANNEL_RAW_DIM:].reshape(count, RAW_GRID, RAW_GRID, ORIENTATION_BINS)
    blocks = orientations.reshape(count, POOLED_GRID, factor, POOLED_GRID, factor, ORIENTATION_BINS)
    pooled_orientations = blocks.mean(axis=(2, 4))
    return np.concatenate([channel_part.reshape(count, -1), pooled_orientations.reshape(count, -1)], axis=1)


def extract_features(images):
    """The 512-d features (N, FEATURE_DIM) float32 of images (N, 64, 64, 3) uint8: pool(describe(images))."""
    return pool(describe(images))

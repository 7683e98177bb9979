"""Write a small synthetic stand-in for the course data set, in exactly its on-disk layout.

Each labeled class is drawn as a distinct object: a shape (disc, ring, cross, star, ...) in a
class colour with a texture (solid, stripes, checker, dots), jittered per instance, so a detector
can learn the classes but has to use shape, colour and texture together. Objects (1-6 per image,
small to large, limited overlap) sit on cluttered backgrounds: colour gradients, low-contrast noise
and distractor strokes/blobs that match no class. Unlabeled images are rendered the same way, so
self-supervised pretraining on them transfers to the labeled ones.

Layout written under --out:

    unlabeled/<i>.PNG                        i = 0 .. num_unlabeled-1, RGB, unlabeled-size square
    labeled/training/images/<id>.JPEG        id = 1 .. num_train
    labeled/training/labels/<id>.yml
    labeled/validation/images/<id>.JPEG      id = num_train+1 .. num_train+num_val (ids continue)
    labeled/validation/labels/<id>.yml

Each label file holds ``image_size: [width, height]``, ``bboxes: [[xmin, ymin, xmax, ymax], ...]``
(absolute pixels; xmax/ymax are exclusive edges, tight around the visible object) and
``labels: [class name, ...]``. Every image derives its RNG from (seed, split, id), so the output is
byte-identical for the same arguments whatever --workers is.

With ``--sqsh`` the unlabeled images are packed instead as ``unlabeled.sqsh``, a squashfs image
holding ``unlabeled/<i>.PNG`` as the course ships ``unlabeled_224.sqsh`` (needs Debian's
``mksquashfs``, package squashfs-tools).

With ``--coco`` the labeled set is also written as COCO JSON, converted from ``labeled/`` by
tools/dataset_converters/course_to_coco.py (image copies, so the folder stands alone)::

    labeled_coco/annotations/instances_{training,validation}.json
    labeled_coco/{training,validation}/<id>.JPEG

Both layouts, not COCO instead: the same images and boxes read through either reader is what
shows the two agree, and the course layout is what the converter reads.

Usage: python tools/make_synthetic_data.py --out data/synthetic [--seed 0] [--workers 4] [--sqsh]
       [--coco]
"""
import argparse
import math
import multiprocessing
import runpy
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

# The labeled set's 100 classes, from the one table the dataset class uses; read as a file so
# this tool needs only numpy, Pillow and PyYAML (the custom_modules package imports mmdet).
CLASS_NAMES = runpy.run_path(str(Path(__file__).resolve().parents[1] / 'custom_modules' /
                                 'datasets' / 'classes.py'))['LABELED_CLASSES']


@dataclass(frozen=True)
class ClassStyle:
    """How one class is drawn."""
    class_index: int                 # index into CLASS_NAMES
    shape: str                       # key of _SHAPES
    colour: tuple[int, int, int]     # RGB before per-instance jitter
    texture: str                     # solid | stripes | checker | dots
    aspect: float                    # width / height of the unrotated shape


# Colours, shapes and textures are each shared by two or more classes (red ring vs red triangle,
# orange striped ellipse vs yellow solid ellipse, ...) so no single cue identifies a class.
CLASS_STYLES = (
    ClassStyle(0, 'ring', (200, 40, 40), 'solid', 1.0),            # cup or mug
    ClassStyle(3, 'ellipse', (240, 140, 40), 'stripes', 0.55),     # person
    ClassStyle(9, 'cross', (235, 235, 240), 'solid', 1.0),         # airplane
    ClassStyle(11, 'square', (40, 80, 210), 'checker', 1.4),       # car
    ClassStyle(17, 'diamond', (25, 25, 25), 'stripes', 0.8),       # zebra
    ClassStyle(25, 'disc', (40, 170, 60), 'dots', 1.0),            # traffic light
    ClassStyle(36, 'triangle', (210, 30, 60), 'dots', 1.0),        # strawberry
    ClassStyle(43, 'ellipse', (240, 220, 40), 'solid', 1.6),       # lemon
    ClassStyle(58, 'square', (240, 200, 30), 'stripes', 1.8),      # bus
    ClassStyle(86, 'hexagon', (30, 110, 60), 'checker', 1.0),      # turtle
    ClassStyle(99, 'star', (245, 120, 60), 'solid', 1.0),          # starfish
    ClassStyle(66, 'crescent', (130, 130, 145), 'dots', 1.0),      # elephant
)
CLASS_SUBSET = tuple(style.class_index for style in CLASS_STYLES)

# Shapes as inside-tests on coordinates normalised so the unrotated shape spans [-1, 1]^2
# (v points down, as image rows do).
_SHAPES = {
    'disc': lambda u, v: u * u + v * v <= 1.0,
    'ellipse': lambda u, v: u * u + v * v <= 1.0,
    'ring': lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.55 ** 2),
    'square': lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 1.0,
    'diamond': lambda u, v: np.abs(u) + np.abs(v) <= 1.0,
    'triangle': lambda u, v: (np.abs(u) <= (v + 1.0) / 2.0) & (v <= 1.0),
    'cross': lambda u, v: ((np.abs(u) <= 0.34) | (np.abs(v) <= 0.34))
    & (np.maximum(np.abs(u), np.abs(v)) <= 1.0),
    'hexagon': lambda u, v: (np.abs(u) + np.abs(v) / 2.0 <= 1.0) & (np.abs(v) <= 1.0),
    'star': lambda u, v: np.hypot(u, v) <= _star_radius(np.arctan2(u, -v)),
    'crescent': lambda u, v: (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + (v + 0.1) ** 2 > 0.8 ** 2),
}

SPLIT_CODES = {'unlabeled': 0, 'training': 1, 'validation': 2}   # part of each image's seed
MAX_OBJECTS = 6
MIN_OBJECT_SIZE = 14          # px, sqrt of the unrotated box area; keeps the smallest boxes legible
MAX_ROTATION = math.radians(20)   # well short of 45 deg, so a square never turns into a diamond
MAX_IOU = 0.3
MAX_HIDDEN = 0.25             # a new object may hide at most this share of an earlier one
PLACEMENT_TRIES = 30
SMALL_AREA, MEDIUM_AREA = 32 ** 2, 96 ** 2   # COCO size thresholds
JPEG_QUALITY = 90


def _star_radius(angle: np.ndarray, points: int = 5, inner: float = 0.45) -> np.ndarray:
    """Boundary radius of a star with a point straight up (angle 0)."""
    phase = (angle * points / (2 * np.pi)) % 1.0
    return inner + (1.0 - inner) * np.abs(phase - 0.5) * 2.0


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly stretch a coarse (gh, gw, C) grid (gh, gw >= 2) to float32 (height, width, C)."""

    def lerp(a: np.ndarray, n_out: int, axis: int) -> np.ndarray:
        # linear interpolation along one axis, from a.shape[axis] samples to n_out
        pos = np.linspace(0, a.shape[axis] - 1, n_out)
        lo = np.minimum(pos.astype(int), a.shape[axis] - 2)
        shape = [1] * a.ndim
        shape[axis] = n_out
        frac = (pos - lo).astype(np.float32).reshape(shape)
        return np.take(a, lo, axis) * (1 - frac) + np.take(a, lo + 1, axis) * frac

    return lerp(lerp(grid.astype(np.float32), height, 0), width, 1)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth random colour gradient plus low-contrast low-frequency mottling, as float RGB."""
    cells = rng.integers(2, 4, size=2)
    base = rng.uniform(50, 200, size=3)
    img = _upsample(base + rng.normal(0, 40, size=(*cells, 3)), height, width)
    img += _upsample(rng.normal(0, 8, size=(8, 8, 3)), height, width)
    return img


def _blend(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray, x0: int, y0: int) -> None:
    """Alpha-blend a colour (RGB triple or per-pixel array) onto img at (x0, y0), in place."""
    h, w = alpha.shape
    region = img[y0:y0 + h, x0:x0 + w]
    a = alpha[..., None]
    region *= 1 - a
    region += a * colour


def _draw_distractors(rng: np.random.Generator, img: np.ndarray,
                      class_colours: np.ndarray) -> None:
    """Clutter: thick polyline strokes and wobbly blobs. Neither is a class shape, and blob colours
    stay away from the class colours in use, so nothing here looks like a labeled object."""
    height, width = img.shape[:2]
    for _ in range(rng.integers(2, 8)):
        points = rng.uniform((0, 0), (width, height), size=(rng.integers(2, 5), 2))
        half = rng.uniform(0.5, 3.0)
        colour = rng.uniform(0, 255, size=3)
        opacity = rng.uniform(0.3, 0.9)
        for (ax, ay), (bx, by) in zip(points[:-1], points[1:]):
            x0 = max(int(min(ax, bx) - half - 1), 0)
            y0 = max(int(min(ay, by) - half - 1), 0)
            x1 = min(int(max(ax, bx) + half + 2), width)
            y1 = min(int(max(ay, by) + half + 2), height)
            px = np.arange(x0, x1) + 0.5
            py = (np.arange(y0, y1) + 0.5)[:, None]
            dx, dy = bx - ax, by - ay
            t = np.clip(((px - ax) * dx + (py - ay) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
            dist = np.hypot(px - ax - t * dx, py - ay - t * dy)
            _blend(img, opacity * np.clip(half + 0.5 - dist, 0, 1), colour, x0, y0)
    for _ in range(rng.integers(0, 5)):
        colour = rng.uniform(0, 255, size=3)
        while np.min(np.linalg.norm(class_colours - colour, axis=1)) < 60:
            colour = rng.uniform(0, 255, size=3)
        radius = rng.uniform(6, 40)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        x0, x1 = max(int(cx - 1.6 * radius), 0), min(int(cx + 1.6 * radius) + 1, width)
        y0, y1 = max(int(cy - 1.6 * radius), 0), min(int(cy + 1.6 * radius) + 1, height)
        px = np.arange(x0, x1) + 0.5 - cx
        py = (np.arange(y0, y1) + 0.5)[:, None] - cy
        angle = np.arctan2(py, px)
        # two strong lobe harmonics keep blobs far from discs, ellipses and stars
        lobes = rng.integers(2, 4), rng.integers(4, 7)
        depths = rng.uniform(0.2, 0.35), rng.uniform(0.1, 0.2)
        phases = rng.uniform(0, 2 * np.pi, size=2)
        boundary = radius * (1 + sum(d * np.sin(k * angle + p)
                                     for k, d, p in zip(lobes, depths, phases)))
        alpha = np.clip(boundary - np.hypot(px, py) + 0.5, 0, 1) * rng.uniform(0.5, 0.9)
        _blend(img, alpha, colour, x0, y0)


def _render_object(rng: np.random.Generator, style: ClassStyle, size: float, max_w: int,
                   max_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one instance; returns (alpha, rgb) cropped to its footprint, at most max_w x max_h."""
    aspect = style.aspect * math.exp(rng.uniform(-0.2, 0.2))
    w, h = size * math.sqrt(aspect), size / math.sqrt(aspect)
    theta = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    cos, sin = math.cos(theta), math.sin(theta)
    ext_w, ext_h = w * abs(cos) + h * abs(sin), w * abs(sin) + h * abs(cos)
    # shrink rather than clip, so the whole object always fits inside the image
    scale = min(1.0, 0.95 * max_w / ext_w, 0.95 * max_h / ext_h)
    w, h, size = w * scale, h * scale, size * scale
    win_w = min(math.ceil(ext_w * scale) + 2, max_w)
    win_h = min(math.ceil(ext_h * scale) + 2, max_h)

    def frame(ss: int) -> tuple[np.ndarray, np.ndarray]:
        # (sub-)pixel centres in the object's rotated frame, so textures rotate with the object
        x = (np.arange(win_w * ss, dtype=np.float32) + 0.5) / ss - win_w / 2
        y = ((np.arange(win_h * ss, dtype=np.float32) + 0.5) / ss - win_h / 2)[:, None]
        return cos * x + sin * y, -sin * x + cos * y

    # edges are 2x2 supersampled (anti-aliased); textures, cheaper to leave aliased, once per pixel
    fx, fy = frame(2)
    inside = _SHAPES[style.shape](fx / (w / 2), fy / (h / 2))
    alpha = inside.reshape(win_h, 2, win_w, 2).mean(axis=(1, 3), dtype=np.float32)
    fx, fy = frame(1)

    colour = np.clip(np.array(style.colour) * rng.uniform(0.85, 1.15, size=3)
                     + rng.uniform(-12, 12, size=3), 0, 255).astype(np.float32)
    # the texture's second colour: darker for bright classes, lighter for dark ones; decided on
    # the class colour, not the jittered one, so a class's texture never flips between the two
    luma = np.dot(style.colour, (0.299, 0.587, 0.114))
    second = colour * 0.45 if luma > 90 else colour + (235 - colour) * 0.6
    period = float(np.clip(size / rng.uniform(3.5, 5.5), 3.0, 16.0))
    px, py = fx / period + rng.uniform(0, 1), fy / period + rng.uniform(0, 1)
    if style.texture == 'stripes':
        pattern = py % 1.0 < 0.5
    elif style.texture == 'checker':
        pattern = (np.floor(px) + np.floor(py)) % 2 == 0
    elif style.texture == 'dots':
        pattern = (px % 1.0 - 0.5) ** 2 + (py % 1.0 - 0.5) ** 2 < 0.3 ** 2
    else:
        pattern = np.zeros(alpha.shape, dtype=bool)
    rgb = np.where(pattern[..., None], second, colour)
    # a gentle linear shading reads as lighting and breaks up flat colour
    direction = rng.uniform(-1, 1, size=2) * 0.18 / max(size / 2, 1.0)
    rgb *= (1 + direction[0] * fx + direction[1] * fy)[..., None]

    rows, cols = np.nonzero(alpha)
    crop = slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)
    return alpha[crop], rgb[crop]


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def render_image(rng: np.random.Generator, width: int, height: int,
                 num_classes: int) -> tuple[np.ndarray, list[list[int]], list[int]]:
    """Render one image; returns (uint8 HxWx3, xyxy boxes of visible objects, subset indices)."""
    styles = CLASS_STYLES[:num_classes]
    img = _background(rng, height, width)
    _draw_distractors(rng, img, np.array([s.colour for s in styles], dtype=float))

    owner = np.zeros((height, width), dtype=np.int16)   # 1-based object id per pixel, 0 = none
    visible = np.zeros(1, dtype=np.int64)               # visible pixel count per object id
    footprints: list[tuple[int, int, int, int]] = []
    classes: list[int] = []
    for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
        cls = int(rng.integers(num_classes))
        # log-uniform sizes: with the default image sizes about a third of the boxes are small,
        # half medium and a fifth large
        size = math.exp(rng.uniform(math.log(MIN_OBJECT_SIZE), math.log(0.75 * min(width, height))))
        alpha, rgb = _render_object(rng, styles[cls], size, width, height)
        h, w = alpha.shape
        solid = alpha >= 0.5
        for _ in range(PLACEMENT_TRIES):
            x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            box = (x0, y0, x0 + w, y0 + h)   # footprint; the label box is the visible part
            if any(_box_iou(box, other) > MAX_IOU for other in footprints):
                continue
            hidden = np.bincount(owner[y0:y0 + h, x0:x0 + w][solid], minlength=len(visible))
            if np.any(hidden[1:] > MAX_HIDDEN * visible[1:]):
                continue
            _blend(img, alpha, rgb, x0, y0)
            visible = np.append(visible - hidden, solid.sum())
            owner[y0:y0 + h, x0:x0 + w][solid] = len(footprints) + 1
            footprints.append(box)
            classes.append(cls)
            break

    boxes = []
    for i, (x0, y0, x1, y1) in enumerate(footprints, start=1):
        rows, cols = np.nonzero(owner[y0:y1, x0:x1] == i)
        boxes.append([x0 + int(cols.min()), y0 + int(rows.min()),
                      x0 + int(cols.max()) + 1, y0 + int(rows.max()) + 1])

    # sensor noise and an exposure change over everything, so colours are not exact class keys
    img += rng.uniform(2, 7) * rng.standard_normal(img.shape, dtype=np.float32)
    img = img * rng.uniform(0.85, 1.15) + rng.uniform(-10, 10)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), boxes, classes


@dataclass(frozen=True)
class _Job:
    out: Path
    seed: int
    split: str
    image_id: int
    num_classes: int
    unlabeled_size: int
    min_size: int
    max_size: int


def _make_one(job: _Job) -> list[tuple[int, int]]:
    """Render and write one image (and its label file); returns (subset class, box area) pairs."""
    rng = np.random.default_rng([job.seed, SPLIT_CODES[job.split], job.image_id])
    if job.split == 'unlabeled':
        pixels, _, _ = render_image(rng, job.unlabeled_size, job.unlabeled_size, job.num_classes)
        Image.fromarray(pixels).save(job.out / 'unlabeled' / f'{job.image_id}.PNG')
        return []
    width, height = (int(v) for v in rng.integers(job.min_size, job.max_size + 1, size=2))
    pixels, boxes, classes = render_image(rng, width, height, job.num_classes)
    split_dir = job.out / 'labeled' / job.split
    Image.fromarray(pixels).save(split_dir / 'images' / f'{job.image_id}.JPEG',
                                 quality=JPEG_QUALITY)
    label = {'image_size': [width, height], 'bboxes': boxes,
             'labels': [CLASS_NAMES[CLASS_SUBSET[c]] for c in classes]}
    with open(split_dir / 'labels' / f'{job.image_id}.yml', 'w') as f:
        yaml.safe_dump(label, f, default_flow_style=None)
    return [(c, (b[2] - b[0]) * (b[3] - b[1])) for c, b in zip(classes, boxes)]


def make_dataset(out: str | Path, seed: int = 0, num_unlabeled: int = 200, num_train: int = 100,
                 num_val: int = 50, unlabeled_size: int = 224, min_size: int = 160,
                 max_size: int = 320, num_classes: int = 8, workers: int = 1,
                 overwrite: bool = False, coco: bool = False) -> dict:
    """Write the synthetic data set under ``out`` and return a summary of what was written.

    Raises FileExistsError if ``out/labeled``, ``out/unlabeled`` or ``out/labeled_coco`` already
    has content and ``overwrite`` is false; with ``overwrite`` those folders are replaced (nothing
    else in ``out`` is touched), so no stale files from an earlier, larger run survive, and no
    COCO copy of an earlier labeled set sits beside a new one.

    ``coco``: also write ``out/labeled_coco``, the labeled set converted to COCO JSON with image
    copies (tools/dataset_converters/course_to_coco.py; imports mmdet, so only when asked).

    The summary holds the image count per split, the class names in use, and the number of
    labeled boxes: in all, per class, and small/medium/large by COCO's area thresholds.
    """
    if not 1 <= num_classes <= len(CLASS_STYLES):
        raise ValueError(f'num_classes must be in 1..{len(CLASS_STYLES)}, got {num_classes}')
    if min(num_unlabeled, num_train, num_val) < 0:
        raise ValueError('image counts must be >= 0')
    if not 32 <= min_size <= max_size or unlabeled_size < 32:
        raise ValueError('need 32 <= min_size <= max_size and unlabeled_size >= 32')
    out = Path(out)
    for sub in ('labeled', 'unlabeled', 'labeled_coco'):
        if (out / sub).is_dir() and any((out / sub).iterdir()):
            if not overwrite:
                raise FileExistsError(f'{out / sub} is not empty; pass --overwrite to replace it')
            shutil.rmtree(out / sub)
    (out / 'unlabeled').mkdir(parents=True, exist_ok=True)
    for split in ('training', 'validation'):
        for kind in ('images', 'labels'):
            (out / 'labeled' / split / kind).mkdir(parents=True, exist_ok=True)

    common = dict(out=out, seed=seed, num_classes=num_classes, unlabeled_size=unlabeled_size,
                  min_size=min_size, max_size=max_size)
    jobs = ([_Job(split='unlabeled', image_id=i, **common) for i in range(num_unlabeled)]
            + [_Job(split='training', image_id=i, **common) for i in range(1, num_train + 1)]
            + [_Job(split='validation', image_id=i, **common)
               for i in range(num_train + 1, num_train + num_val + 1)])
    if workers > 1:
        with multiprocessing.Pool(workers) as pool:
            results = pool.map(_make_one, jobs, chunksize=8)
    else:
        results = [_make_one(job) for job in jobs]

    if coco:
        from dataset_converters.course_to_coco import convert
        convert(str(out / 'labeled'), str(out / 'labeled_coco'), link='copy',
                num_workers=workers)

    objects = [obj for result in results for obj in result]
    areas = [area for _, area in objects]
    per_class = Counter(CLASS_NAMES[CLASS_SUBSET[c]] for c, _ in objects)
    names = [CLASS_NAMES[i] for i in CLASS_SUBSET[:num_classes]]
    return {
        'out': str(out),
        'unlabeled': num_unlabeled,
        'training': num_train,
        'validation': num_val,
        'classes': names,
        'objects': len(objects),
        'per_class': {name: per_class[name] for name in names},
        'small': sum(a < SMALL_AREA for a in areas),
        'medium': sum(SMALL_AREA <= a < MEDIUM_AREA for a in areas),
        'large': sum(a >= MEDIUM_AREA for a in areas),
    }


def pack_unlabeled(out: Path) -> Path:
    """Replace ``out/unlabeled/`` by ``out/unlabeled.sqsh`` holding it (the course's layout)."""
    image = out / 'unlabeled.sqsh'
    # fixed times and owner: the same images give the same bytes
    subprocess.run(['mksquashfs', str(out / 'unlabeled'), str(image), '-noappend', '-quiet',
                    '-keep-as-directory', '-all-root', '-mkfs-time', '0', '-all-time', '0'],
                   check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(out / 'unlabeled')
    return image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='output folder (gets labeled/ and unlabeled/)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-unlabeled', type=int, default=200)
    parser.add_argument('--num-train', type=int, default=100)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--unlabeled-size', type=int, default=224, help='side of unlabeled images')
    parser.add_argument('--min-size', type=int, default=160, help='min labeled width/height')
    parser.add_argument('--max-size', type=int, default=320, help='max labeled width/height')
    parser.add_argument('--num-classes', type=int, default=8,
                        help=f'use the first N of the {len(CLASS_STYLES)}-class subset')
    parser.add_argument('--workers', type=int, default=1, help='processes; output is the same')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing labeled/, unlabeled/ (and labeled_coco/) '
                        'folders under --out')
    parser.add_argument('--sqsh', action='store_true', help='pack the unlabeled images as '
                        'unlabeled.sqsh (a squashfs image with unlabeled/ inside) instead')
    parser.add_argument('--coco', action='store_true', help='also write the labeled set as COCO '
                        'JSON, converted from labeled/, to labeled_coco/ '
                        '(annotations/instances_<split>.json, <split>/<id>.JPEG copies): both '
                        'layouts, not COCO instead, so the same data can go through either '
                        'reader')
    args = parser.parse_args(argv)
    if args.sqsh and not shutil.which('mksquashfs'):
        sys.exit('error: --sqsh needs mksquashfs (Debian/Ubuntu: apt-get install squashfs-tools)')
    if args.sqsh and (Path(args.out) / 'unlabeled.sqsh').exists() and not args.overwrite:
        sys.exit(f'error: {Path(args.out) / "unlabeled.sqsh"} exists; pass --overwrite to replace it')
    try:
        s = make_dataset(args.out, seed=args.seed, num_unlabeled=args.num_unlabeled,
                         num_train=args.num_train, num_val=args.num_val,
                         unlabeled_size=args.unlabeled_size, min_size=args.min_size,
                         max_size=args.max_size, num_classes=args.num_classes,
                         workers=args.workers, overwrite=args.overwrite, coco=args.coco)
    except (FileExistsError, ValueError) as e:
        sys.exit(f'error: {e}')
    if args.sqsh:
        pack_unlabeled(Path(args.out))
    print(f"wrote {s['unlabeled']} unlabeled, {s['training']} training, {s['validation']} "
          f"validation images; {s['objects']} labeled objects (small {s['small']}, medium "
          f"{s['medium']}, large {s['large']}) over {len(s['classes'])} classes to {s['out']}"
          + (' (labeled/ also as COCO JSON in labeled_coco/)' if args.coco else ''))


if __name__ == '__main__':
    main()

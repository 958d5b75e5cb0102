"""Synthetic VOC-style datasets that a small network can learn in minutes on a CPU.

Every object class has its own shape, colour and texture, so the class of a pixel is recoverable
from a small neighbourhood (a 3x3-conv network sees colour and texture long before it sees a
whole shape). Backgrounds are low-saturation gradients and smooth noise, never the saturated
object colours. Masks carry 255 bands along object outlines like real VOC annotations.

Output is byte-identical for the same arguments: each image draws from its own generator seeded
by (seed, index), and PIL's JPEG/PNG encoders are deterministic.
"""

import collections
import io
import os

import numpy as np
from PIL import Image

from data.dataset import LABEL_MAP_FILE
from data.voc import IGNORE_LABEL, VOC_CLASSES, voc_palette

ObjectStyle = collections.namedtuple("ObjectStyle", ["class_id", "shape", "rgb", "texture"])

# One style per class: distinct hue (far apart, all saturated), distinct texture, distinct shape.
STYLES = (
    ObjectStyle(VOC_CLASSES.index("aeroplane"), "triangle", (50, 110, 235), "hstripes"),
    ObjectStyle(VOC_CLASSES.index("boat"), "half_disc", (245, 135, 20), "vstripes"),
    ObjectStyle(VOC_CLASSES.index("bottle"), "capsule", (30, 185, 65), "dots"),
    ObjectStyle(VOC_CLASSES.index("car"), "rectangle", (210, 25, 35), "checker"),
    ObjectStyle(VOC_CLASSES.index("cat"), "ellipse", (235, 215, 30), "dstripes"),
    ObjectStyle(VOC_CLASSES.index("person"), "head_body", (190, 55, 205), "speckle"),
)
SYNTHETIC_CLASS_IDS = tuple(sorted(style.class_id for style in STYLES))

ID_YEAR = 2099  # ids look like VOC's ('2099_000001') but can never collide with real ones
BOUNDARY_WIDTH = 3  # px, like the ~3-5 px 'void' bands of VOC masks


def _shape_mask(shape, yy, xx, cy, cx, size, angle):
    """Boolean mask of one object; yy/xx are pixel coordinate grids, size ~ object extent in px."""
    cos, sin = np.cos(angle), np.sin(angle)
    # Coordinates in the object's (rotated) frame, in units of half the object size.
    u = ((xx - cx) * cos + (yy - cy) * sin) / (size / 2)
    v = (-(xx - cx) * sin + (yy - cy) * cos) / (size / 2)
    dy, dx = (yy - cy) / (size / 2), (xx - cx) / (size / 2)  # upright frame
    if shape == "triangle":
        return (v < 0.6) & (np.abs(u) < (v + 1.0) * 0.6)  # apex at v = -1, base at v = 0.6
    if shape == "half_disc":
        return (dx**2 + (dy + 0.3) ** 2 < 1.0) & (dy > -0.3)
    if shape == "capsule":
        half = 0.45
        return (np.abs(dx) < half) & (np.abs(dy) < 1.0 - half) | (dx**2 + (np.abs(dy) - (1.0 - half)) ** 2 < half**2)
    if shape == "rectangle":
        return (np.abs(dx) < 1.0) & (np.abs(dy) < 0.5)
    if shape == "ellipse":
        return (u / 1.0) ** 2 + (v / 0.6) ** 2 < 1.0
    if shape == "head_body":
        head = dx**2 + (dy + 0.7) ** 2 < 0.3**2
        body = (np.abs(dx) < 0.4) & (dy > -0.42) & (dy < 1.0)
        return head | body
    raise ValueError(f"unknown shape {shape!r}")


def _texture(name, yy, xx, period, phase, rng):
    """Pattern in {0, 1} (float) that darkens part of the object."""
    if name == "hstripes":
        return ((yy + phase) // (period / 2) % 2).astype(np.float32)
    if name == "vstripes":
        return ((xx + phase) // (period / 2) % 2).astype(np.float32)
    if name == "dstripes":
        return ((xx + yy + phase) // (period / 2) % 2).astype(np.float32)
    if name == "checker":
        return (((xx + phase) // period + (yy + phase) // period) % 2).astype(np.float32)
    if name == "dots":
        fy = (yy + phase) % period - period / 2
        fx = (xx + phase) % period - period / 2
        return (fy**2 + fx**2 < (period / 3.2) ** 2).astype(np.float32)
    if name == "speckle":
        return (rng.random(yy.shape) < 0.35).astype(np.float32)
    raise ValueError(f"unknown texture {name!r}")


def _smooth_noise(rng, height, width, cells):
    """Low-frequency noise in [-1, 1]: a few random values bilinearly upsampled."""
    coarse = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.BILINEAR))


def _background(rng, height, width, yy, xx):
    """Low-saturation gradient + smooth noise (+ sometimes faint grey stripes): float32 [H, W, 3]."""
    base = (rng.uniform(60, 190) + rng.uniform(-15, 15, size=3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.float32(np.cos(angle) / width) * xx + np.float32(np.sin(angle) / height) * yy
    ramp *= np.float32(rng.uniform(-50, 50))
    noise = _smooth_noise(rng, height, width, int(rng.integers(3, 8))) * np.float32(rng.uniform(10, 30))
    shade = ramp + noise
    if rng.random() < 0.3:
        period = rng.uniform(10, 30)
        shade += 8.0 * np.sin(
            np.float32(2 * np.pi / period) * (xx * np.float32(np.cos(angle)) - yy * np.float32(np.sin(angle)))
        )
    return base + shade[..., None]


def _boundary_band(label, width=BOUNDARY_WIDTH):
    """Pixels within ~width px of a place where the label changes (image borders excluded)."""
    from scipy import ndimage

    size = width + 1  # the window spans `size` pixels; a change shows on `width` of them
    hi = ndimage.maximum_filter(label, size=size, mode="nearest")
    lo = ndimage.minimum_filter(label, size=size, mode="nearest")
    return hi != lo


def render_sample(rng, height, width, max_objects=3, styles=STYLES, ignore_label=IGNORE_LABEL):
    """One synthetic image and mask: (uint8 [H,W,3], uint8 [H,W] with `ignore_label` (255) boundary bands).

    styles: the object classes to draw (default: the VOC ones of STYLES; see `styles_for_label_map`).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = _background(rng, height, width, yy, xx)
    label = np.zeros((height, width), dtype=np.uint8)
    short = min(height, width)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        style = styles[int(rng.integers(len(styles)))]
        size = rng.uniform(0.4, 0.85) * short
        cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
        angle = rng.uniform(0, 2 * np.pi)
        colour = np.clip(np.array(style.rgb) * rng.uniform(0.85, 1.1) + rng.uniform(-18, 18, size=3), 0, 255)
        period, phase, depth = rng.uniform(6, 12), rng.uniform(0, 12), rng.uniform(0.3, 0.45)
        # Shapes fit in a circle of radius ~size around the centre: draw only inside that box.
        y0, y1 = max(int(cy - size), 0), min(int(cy + size) + 1, height)
        x0, x1 = max(int(cx - size), 0), min(int(cx + size) + 1, width)
        box = (slice(y0, y1), slice(x0, x1))
        mask = _shape_mask(style.shape, yy[box], xx[box], cy, cx, size, angle)
        if not mask.any():
            continue
        shade = 1.0 - depth * _texture(style.texture, yy[box], xx[box], period, phase, rng)
        image[box][mask] = colour.astype(np.float32) * shade[mask][:, None]
        label[box][mask] = style.class_id  # later objects occlude earlier ones, in pixels and labels alike
    image += rng.standard_normal(size=image.shape, dtype=np.float32) * np.float32(4.0)
    label[_boundary_band(label)] = ignore_label
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label


def encode_palette_png(label, palette=None):
    """A VOC-style palette PNG (mode 'P'; VOC colour map unless `palette`, uint8 [256, 3]) of a class-id mask."""
    mask = Image.frombytes("P", (label.shape[1], label.shape[0]), np.ascontiguousarray(label, np.uint8).tobytes())
    mask.putpalette((voc_palette() if palette is None else np.asarray(palette, np.uint8)).flatten().tolist())
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return buf.getvalue()


def encode_jpeg(image, quality=90):
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _render_indexed(seed, index, min_size, max_size, styles=STYLES, ignore_label=IGNORE_LABEL):
    rng = np.random.default_rng([seed, index])
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    return render_sample(rng, height, width, styles=styles, ignore_label=ignore_label)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img")


def generate_voc_dataset(output_dir, num_train=200, num_val=50, seed=0, min_size=160, max_size=320, progress=False):
    """Writes a synthetic dataset in the exact VOCdevkit layout and returns the VOC2012 folder.

    output_dir/VOC2012/JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette PNGs with the
    VOC colour map, 255 bands on outlines), ImageSets/Segmentation/{train,val,trainval}.txt.
    Ids are '2099_000001'... (train first, then val). Image sides are drawn from
    [min_size, max_size]. Classes: see STYLES (aeroplane, boat, bottle, car, cat, person).
    """
    if not 8 <= min_size <= max_size:
        raise ValueError(f"need 8 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    root = os.path.join(str(output_dir), "VOC2012")
    dirs = {name: os.path.join(root, name) for name in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    ids = [f"{ID_YEAR}_{i:06d}" for i in range(1, num_train + num_val + 1)]
    for index, image_id in _progress(enumerate(ids), len(ids), "synth", progress):
        image, label = _render_indexed(seed, index, min_size, max_size)
        _write(os.path.join(dirs["JPEGImages"], f"{image_id}.jpg"), encode_jpeg(image))
        _write(os.path.join(dirs["SegmentationClass"], f"{image_id}.png"), encode_palette_png(label))
    splits = {"train": ids[:num_train], "val": ids[num_train:], "trainval": ids}
    for name, split_ids in splits.items():
        _write(
            os.path.join(dirs["ImageSets/Segmentation"], f"{name}.txt"), "".join(f"{i}\n" for i in split_ids).encode()
        )
    return root


def generate_sbd_dataset(
    output_dir, num_train=20, num_val=10, seed=0, min_size=160, max_size=320, first_index=1, progress=False
):
    """Writes a synthetic dataset in the SBD layout and returns its `dataset/` folder.

    output_dir/dataset/img/<id>.jpg, cls/<id>.mat (struct GTcls with field Segmentation, uint8
    class ids; like real SBD there are no 255 bands), train.txt, val.txt. Ids start at
    `first_index` ('2099_%06d'), so a VOC tree from `generate_voc_dataset` can share ids with it.
    """
    import scipy.io

    root = os.path.join(str(output_dir), "dataset")
    for name in ("img", "cls"):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    indices = range(first_index, first_index + num_train + num_val)
    ids = [f"{ID_YEAR}_{i:06d}" for i in indices]
    for index, image_id in _progress(zip(indices, ids), len(ids), "synth-sbd", progress):
        # Offset the stream so an SBD image differs from the VOC image with the same id.
        image, label = _render_indexed(seed + 1_000_003, index - 1, min_size, max_size)
        label = np.where(label == IGNORE_LABEL, 0, label).astype(np.uint8)
        _write(os.path.join(root, "img", f"{image_id}.jpg"), encode_jpeg(image))
        scipy.io.savemat(
            os.path.join(root, "cls", f"{image_id}.mat"),
            {
                "GTcls": {
                    "Segmentation": label,
                    "Boundaries": np.zeros((0, 1), dtype=object),
                    "CategoriesPresent": np.unique(label[label > 0]).astype(np.uint8),
                }
            },
            do_compression=True,
        )
    for name, split_ids in (("train", ids[:num_train]), ("val", ids[num_train:])):
        _write(os.path.join(root, f"{name}.txt"), "".join(f"{i}\n" for i in split_ids).encode())
    return root


# id -> what data.tfrecord.load_sample must report for it (BadSample reason, or the conversion).
DEFECTS = {
    "2099_900001": "corrupt_image",  # JPEG cut in half
    "2099_900002": "size_mismatch",  # mask one column wider than the image
    "2099_900003": "rgb_mask",  # colour mask instead of palette indices
    "2099_900004": "label_out_of_range",  # class id 42
    "2099_900005": "missing_mask",  # no SegmentationClass/<id>.png
    "2099_900006": "missing_image",  # listed, but no JPEGImages/<id>.jpg
    "2099_900007": "grayscale_to_rgb",  # valid: a grayscale JPEG, converted to RGB (not a reject)
}


def add_defects(voc_root, split="train", seed=0, size=48):
    """Adds one deliberately broken sample per DEFECTS entry to `split` (and trainval) of a synthetic tree.

    For demos and tests of the ingest's skip-and-count path; returns DEFECTS (id -> expected
    reason or conversion).
    """
    rng = np.random.default_rng([seed, 900_000])
    image, label = render_sample(rng, size, size)
    images, masks = os.path.join(voc_root, "JPEGImages"), os.path.join(voc_root, "SegmentationClass")

    def write_pair(image_id, image_bytes, mask_bytes):
        if image_bytes is not None:
            _write(os.path.join(images, f"{image_id}.jpg"), image_bytes)
        if mask_bytes is not None:
            _write(os.path.join(masks, f"{image_id}.png"), mask_bytes)

    good_jpeg, good_mask = encode_jpeg(image), encode_palette_png(label)
    write_pair("2099_900001", good_jpeg[: len(good_jpeg) // 2], good_mask)
    write_pair("2099_900002", good_jpeg, encode_palette_png(np.pad(label, ((0, 0), (0, 1)))))
    buf = io.BytesIO()
    Image.fromarray(voc_palette()[label]).save(buf, format="PNG")
    write_pair("2099_900003", good_jpeg, buf.getvalue())
    write_pair("2099_900004", good_jpeg, encode_palette_png(np.where(label == 0, 42, label).astype(np.uint8)))
    write_pair("2099_900005", good_jpeg, None)
    write_pair("2099_900006", None, good_mask)
    buf = io.BytesIO()
    Image.fromarray(image).convert("L").save(buf, format="JPEG", quality=90)
    write_pair("2099_900007", buf.getvalue(), good_mask)
    lists = os.path.join(voc_root, "ImageSets", "Segmentation")
    for name in {split, "trainval"}:
        with open(os.path.join(lists, f"{name}.txt"), "a") as f:
            f.write("".join(f"{i}\n" for i in DEFECTS))
    return dict(DEFECTS)


# --- other label maps ------------------------------------------------------------------------------------------

SHAPES = ("triangle", "half_disc", "capsule", "rectangle", "ellipse", "head_body")
TEXTURES = ("hstripes", "vstripes", "dots", "checker", "dstripes", "speckle")
LAYOUTS = ("voc", "generic")
GENERIC_DIR = "dataset"


def _hue_rgb(k, n):
    """A saturated colour, hues spread evenly over n classes."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((k / max(n, 1)) % 1.0, 0.85, 0.9)
    return (int(r * 255), int(g * 255), int(b * 255))


def styles_for_label_map(label_map):
    """Object styles for train ids 1..N-1 of a `data.label_map.LabelMap` (id 0 is the background).

    The VOC map gets STYLES (six VOC classes). Others get every class id, shapes and textures cycling, in the
    class's palette colour where the map has one, else a hue spread over the classes.
    """
    from data.label_map import LabelMap

    if label_map == LabelMap.voc():
        return STYLES
    colours = label_map.class_colors()
    n = label_map.num_classes
    return tuple(
        ObjectStyle(
            k,
            SHAPES[(k - 1) % len(SHAPES)],
            colours.get(k, _hue_rgb(k - 1, n - 1)),
            TEXTURES[((k - 1) + (k - 1) // len(SHAPES)) % len(TEXTURES)],
        )
        for k in range(1, n)
    )


def generate_dataset(
    output_dir,
    label_map=None,
    layout="voc",
    num_train=200,
    num_val=50,
    seed=0,
    min_size=160,
    max_size=320,
    rgb_masks=False,
    progress=False,
):
    """Writes a synthetic dataset for any label map (default VOC) and returns its root folder.

    label_map: a `data.label_map.LabelMap`, a built-in name ('voc', 'cityscapes', 'ade20k'), a JSON/YAML
    file or None (VOC). Train id 0 is the background; objects of ids 1..N-1 are drawn (see
    `styles_for_label_map`); outlines carry the map's ignore label.
    layout: 'voc' -> output_dir/VOC2012 exactly as `generate_voc_dataset` (which this calls, byte for
    byte, for the VOC map); 'generic' -> output_dir/dataset/{images,masks,splits} for
    `data.generic.GenericDataset`. Masks are palette PNGs of train ids (colours: `label_map.colors()`), or
    with `rgb_masks` (generic layout only) RGB PNGs in the palette's colours, which then must cover every
    class id and the ignore label. Non-VOC maps are also saved as ROOT/label_map.json.
    """
    from data.label_map import LabelMap

    label_map = LabelMap.resolve(label_map)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    if rgb_masks and layout != "generic":
        raise ValueError("rgb_masks needs layout='generic' (VOC masks are palette PNGs of class ids)")
    if label_map.num_classes < 2:
        raise ValueError(
            f"label map {label_map.name!r} has {label_map.num_classes} class; synthetic data needs a "
            "background (id 0) and at least one object class"
        )
    is_voc = label_map == LabelMap.voc()
    if layout == "voc" and is_voc:
        return generate_voc_dataset(
            output_dir, num_train, num_val, seed, min_size=min_size, max_size=max_size, progress=progress
        )
    if not 8 <= min_size <= max_size:
        raise ValueError(f"need 8 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    colours = label_map.class_colors()
    if rgb_masks:
        needed = set(range(label_map.num_classes)) | {label_map.ignore_label}
        missing = sorted(needed - set(colours))
        if missing:
            raise ValueError(
                f"rgb_masks: label map {label_map.name!r} has no palette colour for ids {missing}; "
                "give every class (and the ignore label) a colour"
            )
    if layout == "voc":
        root = os.path.join(str(output_dir), "VOC2012")
        image_dir, mask_dir, list_dir = (
            os.path.join(root, d) for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")
        )
    else:
        root = os.path.join(str(output_dir), GENERIC_DIR)
        image_dir, mask_dir, list_dir = (os.path.join(root, d) for d in ("images", "masks", "splits"))
    for d in (image_dir, mask_dir, list_dir):
        os.makedirs(d, exist_ok=True)
    styles, display = styles_for_label_map(label_map), label_map.colors()
    ids = [f"{ID_YEAR}_{i:06d}" for i in range(1, num_train + num_val + 1)]
    for index, image_id in _progress(enumerate(ids), len(ids), "synth", progress):
        image, label = _render_indexed(
            seed, index, min_size, max_size, styles=styles, ignore_label=label_map.ignore_label
        )
        _write(os.path.join(image_dir, f"{image_id}.jpg"), encode_jpeg(image))
        if rgb_masks:
            buf = io.BytesIO()
            Image.fromarray(display[label], mode="RGB").save(buf, format="PNG")
            mask_bytes = buf.getvalue()
        else:
            mask_bytes = encode_palette_png(label, display)
        _write(os.path.join(mask_dir, f"{image_id}.png"), mask_bytes)
    for name, split_ids in {"train": ids[:num_train], "val": ids[num_train:], "trainval": ids}.items():
        _write(os.path.join(list_dir, f"{name}.txt"), "".join(f"{i}\n" for i in split_ids).encode())
    if not is_voc:
        label_map.save(os.path.join(root, LABEL_MAP_FILE))
    return root

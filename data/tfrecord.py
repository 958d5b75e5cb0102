"""TFRecord codec: source files -> validated samples -> tf.train.Example (official DeepLab keys).

Contract (docs/ARCHITECTURE.md): the feature keys of DeepLab's build_voc2012_data.py; RGB JPEG
bytes are copied from the source file byte for byte (re-encoding would lose quality and change the
pixels the reference results were measured on); masks are single-channel PNGs of class ids
(0..num_classes-1, 255 = ignore) so a decoded record equals its source pixel for pixel.

Bad inputs raise `BadSample` with a short `reason` code; the caller (ExampleGen) skips and
counts them. Images in other colour modes are converted to RGB PNG and recorded in
`Sample.converted` instead of being dropped.

TensorFlow is imported only by the functions that return or parse `tf.train.Example` protos;
`example_bytes` writes the message's wire format directly and `parse_light_example` parses it with a
wire-identical protobuf-only copy of the message (Beam workers must not pay ~12 s for importing
TensorFlow).
"""

import collections
import functools
import io
import struct
import zlib
from typing import TYPE_CHECKING, Any, Tuple

import numpy as np
from PIL import Image

from data import fileio
from data.dataset import SampleRef
from data.voc import IGNORE_LABEL, NUM_CLASSES

if TYPE_CHECKING:
    import tensorflow as tf  # only remote files and to_example pay for importing TensorFlow

# Official DeepLab TFRecord keys (research/deeplab/datasets/build_data.py).
IMAGE_ENCODED = "image/encoded"
IMAGE_FILENAME = "image/filename"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_CHANNELS = "image/channels"
LABEL_ENCODED = "image/segmentation/class/encoded"
LABEL_FORMAT = "image/segmentation/class/format"

# The reference repo's (sthalles/deeplab_v3) notebook-written records: raw uint8 pixels.
REF_HEIGHT = "height"
REF_WIDTH = "width"
REF_IMAGE_RAW = "image_raw"
REF_ANNOTATION_RAW = "annotation_raw"

# Reason codes of BadSample (ExampleGen counts skipped samples under these names).
REASONS = {
    "missing_image": "the id is listed but its image file does not exist",
    "missing_mask": "the image has no segmentation mask file",
    "corrupt_image": "the image cannot be decoded (corrupt or truncated)",
    "corrupt_mask": "the mask cannot be decoded",
    "size_mismatch": "image and mask sizes differ",
    "rgb_mask": "the mask is a colour (RGB) image, not class ids",
    "label_out_of_range": "the mask holds values that are neither class ids nor 255",
    "unsupported_mask": "the mask format is not PNG or SBD .mat",
}

Sample = collections.namedtuple(
    "Sample", ["image_bytes", "image_format", "mask_png", "height", "width", "filename", "converted"]
)
Sample.__doc__ = """One validated image/mask pair, ready for `to_example`.

image_bytes: encoded image (the source JPEG/PNG bytes unchanged, or a PNG when `converted`).
image_format: 'jpeg' or 'png'.
mask_png: single-channel ('L') PNG of class ids.
height, width: pixel size shared by image and mask.
filename: the sample id (DeepLab stores the file stem, e.g. '2007_000033').
converted: None, or how the image was changed, e.g. 'grayscale_to_rgb', 'cmyk_to_rgb'.
"""


class BadSample(Exception):
    """A sample that cannot be written: `reason` is a code from REASONS, `path` the offending file."""

    def __init__(self, reason, path, detail):
        self.reason = reason
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{reason}: {self.path}: {detail}")

    def __str__(self):
        # Built on demand so that a caller that refines `path` (e.g. adds a record index) changes the message too.
        return f"{self.reason}: {self.path}: {self.detail}"

    def __reduce__(self):
        # Beam and multiprocessing pickle exceptions; the default would call BadSample(message).
        return (type(self), (self.reason, self.path, self.detail))


# PIL mode -> name used in Sample.converted ("<name>_to_rgb").
_MODE_NAMES = {
    "L": "grayscale",
    "LA": "grayscale_alpha",
    "1": "bilevel",
    "I": "grayscale32",
    "I;16": "grayscale16",
    "F": "float",
    "CMYK": "cmyk",
    "RGBA": "rgba",
    "P": "palette",
    "PA": "palette_alpha",
    "YCbCr": "ycbcr",
    "LAB": "lab",
    "HSV": "hsv",
}


def _encode_png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _decode_image(data, path, copy_rgb_jpeg=False):
    """Decodes image bytes to the end (a header-only check misses truncated JPEGs); returns the PIL image.

    copy_rgb_jpeg: the caller keeps an RGB JPEG's bytes and needs only its size and mode, so such a JPEG
    is decoded at 1/8 scale (PIL's draft mode: libjpeg still reads and entropy-decodes every byte of
    every scan, so truncated or corrupt data fails exactly as in a full decode; it skips most of the
    inverse DCT and colour conversion, about half the time). Size and mode are read before that.
    Returns (PIL image, (width, height)); the image of such a JPEG has the reduced size.
    """
    try:
        image = Image.open(io.BytesIO(data))
        size = image.size
        if copy_rgb_jpeg and image.format in ("JPEG", "MPO") and image.mode == "RGB":
            image.draft("RGB", (1, 1))  # no-op (full decode) for JPEGs PIL cannot draft
        image.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise BadSample(
            "corrupt_image",
            path,
            f"cannot decode the image ({e}); re-download or re-export the file "
            "(a truncated JPEG usually means an interrupted copy)",
        ) from e
    return image, size


def _to_rgb(image, path):
    """RGB array of an image in any PIL mode, plus the conversion name (None when it was RGB)."""
    if image.mode == "RGB":
        return np.asarray(image), None
    name = _MODE_NAMES.get(image.mode, image.mode.lower())
    try:
        if image.mode in ("I", "I;16", "F"):
            # Wide grayscale: scale to 8 bits (PIL's convert('L') would clip everything above 255 to white).
            values = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode == "I;16" or values.max() > 255 else 255.0
            gray = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
            rgb = np.repeat(gray[..., None], 3, axis=2)
        else:
            rgb = np.asarray(image.convert("RGB"))
    except Exception as e:
        raise BadSample("corrupt_image", path, f"cannot convert {image.mode} image to RGB ({e})") from e
    return rgb, f"{name}_to_rgb"


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_as_class_ids(data):
    """The single-channel PNG of an 8-bit palette or grayscale PNG, made without re-encoding; else None.

    An 8-bit palette PNG stores its indices exactly as an 8-bit grayscale PNG stores its values, so
    setting the header's colour type to grayscale (3 -> 0), keeping the compressed IDAT chunks as they
    are and dropping the palette and the ancillary chunks gives a PNG that decodes to the same class ids
    (~40x faster than decoding and compressing again). Every chunk's CRC is checked, as libpng does.
    None for any other layout (other bit depths or colour types, unknown critical chunks, bad CRCs,
    no IEND): the caller then encodes the decoded mask.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return None
    view, pos, header, idat = memoryview(data), len(_PNG_SIGNATURE), None, []
    while True:
        if pos + 12 > len(data):
            return None
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data) or zlib.crc32(view[pos + 4 : end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            return None
        if kind == b"IHDR" and header is None and length == 13:
            header = data[pos + 8 : end - 4]
        elif kind == b"IDAT" and header is not None:
            idat.append(view[pos:end])
        elif kind == b"IEND":
            break
        elif kind != b"PLTE" and not kind[0] & 0x20:  # bit 5 of the first letter clear: a critical chunk
            return None
        pos = end
    if header is None or not idat or header[8] != 8 or header[9] not in (0, 3):  # bit depth, colour type
        return None
    return b"".join(
        [_PNG_SIGNATURE, _png_chunk(b"IHDR", header[:9] + b"\x00" + header[10:]), *idat, _png_chunk(b"IEND", b"")]
    )


def _mask_array_from_png(data, path, num_classes, label_map=None):
    try:
        mask = Image.open(io.BytesIO(data))
        mask.load()
    except Exception as e:
        raise BadSample("corrupt_mask", path, f"cannot decode the mask PNG ({e}); re-download or re-export it") from e
    if mask.mode in ("P", "L"):
        # Palette PNG: the palette indices ARE the class ids (VOC's SegmentationClass);
        # 'L': the values are (SegmentationClassAug style).
        return np.asarray(mask, dtype=np.uint8)
    if mask.mode in ("I", "I;16"):
        values = np.asarray(mask)
        if label_map is not None:
            return values  # raw ids: the caller encodes them through the label map
        _check_labels(values, path, num_classes)
        return values.astype(np.uint8)
    if mask.mode in ("RGB", "RGBA") and label_map is not None and label_map.palette:
        # A colour mask of a label map with a palette: the caller looks each colour up (unknown ones are rejected).
        return np.asarray(mask)
    if mask.mode in ("RGB", "RGBA"):
        raise BadSample(
            "rgb_mask",
            path,
            f"the mask is a {mask.mode} colour image, not class ids; convert colour "
            "masks to palette indices (mode 'P' with the VOC palette) or a single-channel PNG of "
            "class ids, e.g. with DeepLab's remove_gt_colormap.py",
        )
    raise BadSample(
        "rgb_mask" if mask.mode == "CMYK" else "unsupported_mask",
        path,
        f"mask mode {mask.mode} is not class ids; save masks as palette ('P') or grayscale ('L') "
        f"PNGs whose values are class ids 0..{num_classes - 1} and {IGNORE_LABEL}",
    )


def _encode_with_label_map(label_map, mask, path):
    """Train ids of a raw mask through `label_map.encode_mask`; its MaskValueError becomes a BadSample
    (reason 'label_out_of_range') whose detail names the offending values (and, with the path, the file)."""
    from data.label_map import MaskValueError

    try:
        return label_map.encode_mask(mask)
    except MaskValueError as e:
        raise BadSample(getattr(e, "reason", "label_out_of_range"), path, str(e)) from None


def _check_labels(mask, path, num_classes):
    if mask.dtype == np.uint8:
        # A histogram is ~5x faster than np.unique (a sort) on uint8 masks, the common case.
        values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    else:
        values = np.unique(mask)
    bad = [int(v) for v in values if not (0 <= v < num_classes or v == IGNORE_LABEL)]
    if bad:
        shown = bad[:20] + (["..."] if len(bad) > 20 else [])
        raise BadSample(
            "label_out_of_range",
            path,
            f"mask values {shown} are outside class ids 0..{num_classes - 1} and ignore {IGNORE_LABEL}; "
            "colour masks must be saved as palette indices, and other datasets need their ids remapped",
        )


def read_mask(path: str, num_classes: int = NUM_CLASSES, label_map: Any = None) -> np.ndarray:
    """Class-id mask (np.uint8 [H, W]) of a VOC palette/grayscale PNG or an SBD .mat; raises BadSample.

    label_map: a `data.label_map.LabelMap` (or anything `LabelMap.resolve` takes except None): the raw mask goes
    through its `encode_mask` (id_remap, RGB palette; values outside the map are rejected as
    'label_out_of_range' naming the values and the file) and `num_classes` is ignored. None: the VOC checks
    of class ids 0..num_classes-1 and 255.
    """
    return _read_mask(path, num_classes, _label_map(label_map))[0]


def _label_map(label_map):
    if label_map is None:
        return None
    from data.label_map import LabelMap

    return label_map if isinstance(label_map, LabelMap) else LabelMap.resolve(label_map)


def _read_mask(path, num_classes, label_map=None):
    """(read_mask's array, the single-channel class-id PNG of the file when it can be made without re-encoding)."""
    try:
        data = fileio.read_bytes(path)
    except FileNotFoundError:
        raise BadSample(
            "missing_mask",
            path,
            "mask file not found; every listed id needs a mask "
            "(SegmentationClass/<id>.png or cls/<id>.mat), or remove the id from the list",
        ) from None
    if str(path).lower().endswith(".mat"):
        from data.sbd import read_sbd_mask

        try:
            mask = read_sbd_mask(data)
        except ValueError as e:
            raise BadSample("corrupt_mask", path, str(e).replace("<bytes>", "mask")) from e
        if label_map is not None:
            mask = _encode_with_label_map(label_map, mask, path)
        png = None
    elif label_map is not None:
        raw = _mask_array_from_png(data, path, label_map.num_classes, label_map)
        mask = _encode_with_label_map(label_map, raw, path)
        # The header rewrite keeps the file's values: valid only when encoding left them unchanged.
        png = _png_as_class_ids(data) if label_map.id_remap is None and raw.ndim == 2 else None
        return mask, png
    else:
        mask = _mask_array_from_png(data, path, num_classes)
        png = _png_as_class_ids(data)
    _check_labels(mask, path, num_classes)
    return mask, png


def load_sample(ref: SampleRef, num_classes: int = NUM_CLASSES, label_map: Any = None) -> Sample:
    """Reads, validates and encodes one `data.splits.SampleRef` into a `Sample`; raises BadSample.

    label_map: None (VOC: class ids 0..num_classes-1 and 255) or a `data.label_map.LabelMap` whose
    `encode_mask` turns the raw mask into train ids (see `read_mask`).

    The image is decoded to its last byte (truncation shows only then; an RGB JPEG, whose bytes are
    kept, at 1/8 scale), the mask is checked against the image size and the label range, and
    converted to a single-channel PNG of class ids (an 8-bit palette/grayscale PNG by rewriting its
    header, without re-encoding).
    """
    try:
        image_bytes = fileio.read_bytes(ref.image_path)
    except FileNotFoundError:
        raise BadSample(
            "missing_image",
            ref.image_path,
            f"id {ref.id!r} is listed but has no image file; check the dataset root or remove the id from the list",
        ) from None
    image, (width, height) = _decode_image(image_bytes, ref.image_path, copy_rgb_jpeg=True)
    converted = None
    if image.format in ("JPEG", "MPO") and image.mode == "RGB":  # MPO: a camera JPEG with extra frames
        image_format = "jpeg"
    elif image.format == "PNG" and image.mode == "RGB":
        image_format = "png"
    else:
        rgb, converted = _to_rgb(image, ref.image_path)
        if converted is None:  # an RGB image in another container (BMP, GIF...)
            converted = f"{(image.format or 'unknown').lower()}_to_png"
        image_bytes, image_format = _encode_png(rgb), "png"

    mask, mask_png = _read_mask(ref.mask_path, num_classes, _label_map(label_map))
    if mask.shape != (height, width):
        raise BadSample(
            "size_mismatch",
            ref.mask_path,
            f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but image {ref.image_path} is "
            f"{width}x{height}; the pair does not belong together, fix or drop it",
        )
    return Sample(
        image_bytes=image_bytes,
        image_format=image_format,
        mask_png=mask_png if mask_png is not None else _encode_png(mask),
        height=height,
        width=width,
        filename=str(ref.id),
        converted=converted,
    )


@functools.lru_cache(maxsize=1)
def _light_example_class():
    """tf.train.Example's message, declared from the same field numbers without importing TensorFlow.

    Messages of this class serialize to the same bytes as tensorflow/core/example/{example,feature}.proto
    (tests/test_ingest_example_gen.py checks it against a tf.train.Example built field by field).
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="deeplab_tfx_light_example.proto", package="deeplab_tfx_light", syntax="proto3"
    )

    def message(name, fields, nested=()):
        m = file.message_type.add(name=name)
        for field_name, number, ftype, label, type_name, oneof in fields:
            field = m.field.add(name=field_name, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name
            if oneof is not None:
                field.oneof_index = oneof
        for nested_message in nested:
            m.nested_type.add().CopyFrom(nested_message)
        return m

    message("BytesList", [("value", 1, f.TYPE_BYTES, f.LABEL_REPEATED, None, None)])
    message("FloatList", [("value", 1, f.TYPE_FLOAT, f.LABEL_REPEATED, None, None)])
    message("Int64List", [("value", 1, f.TYPE_INT64, f.LABEL_REPEATED, None, None)])
    feature = message(
        "Feature",
        [
            ("bytes_list", 1, f.TYPE_MESSAGE, f.LABEL_OPTIONAL, ".deeplab_tfx_light.BytesList", 0),
            ("float_list", 2, f.TYPE_MESSAGE, f.LABEL_OPTIONAL, ".deeplab_tfx_light.FloatList", 0),
            ("int64_list", 3, f.TYPE_MESSAGE, f.LABEL_OPTIONAL, ".deeplab_tfx_light.Int64List", 0),
        ],
    )
    feature.oneof_decl.add(name="kind")
    entry = descriptor_pb2.DescriptorProto(name="FeatureEntry", options=descriptor_pb2.MessageOptions(map_entry=True))
    entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    entry.field.add(
        name="value", number=2, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL, type_name=".deeplab_tfx_light.Feature"
    )
    message(
        "Features",
        [("feature", 1, f.TYPE_MESSAGE, f.LABEL_REPEATED, ".deeplab_tfx_light.Features.FeatureEntry", None)],
        nested=[entry],
    )
    message("Example", [("features", 1, f.TYPE_MESSAGE, f.LABEL_OPTIONAL, ".deeplab_tfx_light.Features", None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("deeplab_tfx_light.Example"))


def _varint(value):
    if 0 <= value < 0x80:  # tags and most lengths
        return bytes((value,))
    value &= 0xFFFFFFFFFFFFFFFF  # int64: negative values are ten-byte two's complement, as protobuf writes them
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field_number, payload):
    return b"".join((_varint(field_number << 3 | 2), _varint(len(payload)), payload))


def _feature_entry(key, value):
    """One Features.feature map entry (key: 1, value: 2) holding a BytesList (Feature field 1) or an
    Int64List (field 3, its values packed, as tf.train.Int64List declares them)."""
    if isinstance(value, bytes):
        feature = _length_delimited(1, _length_delimited(1, value))
    else:
        feature = _length_delimited(3, _length_delimited(1, _varint(int(value))))
    return _length_delimited(1, _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, feature))


def example_bytes(sample: Sample) -> bytes:
    """Serialized tf.train.Example (official DeepLab keys) of a `Sample`, built without TensorFlow.

    This is the one key mapping of the project: `to_example` parses these bytes, and Beam workers write
    them as they are. The protobuf wire format is written directly (a few joins instead of building a
    message and copying the image into it twice); the bytes are those of
    `tf.train.Example.SerializeToString(deterministic=True)`: map entries sorted by key, so the same
    sample always gives the same bytes (tests check both against TensorFlow and `parse_light_example`).
    """
    values = {
        IMAGE_ENCODED: bytes(sample.image_bytes),
        IMAGE_FILENAME: sample.filename.encode("utf-8"),
        IMAGE_FORMAT: sample.image_format.encode("utf-8"),
        IMAGE_HEIGHT: sample.height,
        IMAGE_WIDTH: sample.width,
        IMAGE_CHANNELS: 3,
        LABEL_ENCODED: bytes(sample.mask_png),
        LABEL_FORMAT: b"png",
    }
    # Example.features (field 1) -> Features.feature (field 1, one entry per key, sorted by key's bytes).
    return _length_delimited(1, b"".join(_feature_entry(key, values[key]) for key in sorted(values)))


def parse_light_example(serialized):
    """A serialized tf.train.Example parsed without TensorFlow (same fields: .features.feature[key])."""
    return _light_example_class().FromString(bytes(serialized))


def _features(values):
    import tensorflow as tf

    feature = {}
    for key, value in values.items():
        if isinstance(value, bytes):
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        else:
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def to_example(sample: Sample) -> "tf.train.Example":
    """`tf.train.Example` with the official DeepLab keys for a `Sample` (the proto of `example_bytes`)."""
    import tensorflow as tf

    return tf.train.Example.FromString(example_bytes(sample))


def _as_example(serialized):
    import tensorflow as tf

    if isinstance(serialized, tf.train.Example):
        return serialized
    return tf.train.Example.FromString(bytes(serialized))


def _get(example, key, kind, name):
    feature = example.features.feature.get(key)
    values = getattr(feature, kind).value if feature is not None else []
    if len(values) != 1:
        raise ValueError(
            f"record {name!r}: feature {key!r} is missing or not a single {kind} value; "
            "was it written by data.tfrecord.to_example?"
        )
    return values[0]


def parse_example_np(serialized: bytes) -> Tuple[np.ndarray, np.ndarray, str]:
    """Decodes a serialized official-format Example: (image uint8 [H,W,3], label uint8 [H,W], filename).

    Decoding uses PIL (no TF graph), so Python-side consumers (reports, galleries, clients) stay
    cheap. PIL's JPEG pixels equal `tf.io.decode_jpeg(..., dct_method="INTEGER_ACCURATE")` exactly
    (TF's default fast DCT differs by a few levels). Accepts the serialized bytes or a tf.train.Example.
    Raises ValueError for a malformed record.
    """
    example = _as_example(serialized)
    feature = example.features.feature.get(IMAGE_FILENAME)
    filename = feature.bytes_list.value[0].decode("utf-8") if feature and feature.bytes_list.value else ""
    image = Image.open(io.BytesIO(_get(example, IMAGE_ENCODED, "bytes_list", filename)))
    image = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    label = Image.open(io.BytesIO(_get(example, LABEL_ENCODED, "bytes_list", filename)))
    if label.mode not in ("L", "P"):
        raise ValueError(f"record {filename!r}: label PNG has mode {label.mode}, expected single-channel class ids")
    label = np.asarray(label, dtype=np.uint8)
    height = _get(example, IMAGE_HEIGHT, "int64_list", filename)
    width = _get(example, IMAGE_WIDTH, "int64_list", filename)
    if image.shape[:2] != (height, width) or label.shape != (height, width):
        raise ValueError(
            f"record {filename!r}: image {image.shape[:2]} / label {label.shape} do not match "
            f"image/height,width = ({height}, {width})"
        )
    return image, label, filename


def reference_record_to_example(serialized, filename="", num_classes=NUM_CLASSES, label_map=None):
    """Converts a reference-repo record (sthalles/deeplab_v3 notebook format) to the official format.

    The reference records hold `height`, `width` (int64) and `image_raw` / `annotation_raw`: raw
    uint8 pixels (H*W*3 RGB, or H*W for the grayscale images the notebook stored with one channel,
    which become RGB here; and H*W class ids). Both are encoded losslessly as PNG. Raises
    BadSample ('size_mismatch', 'label_out_of_range', 'corrupt_image') for inconsistent records.
    label_map: None (VOC ids) or a `data.label_map.LabelMap` the annotation goes through (see `read_mask`).
    """
    example = _as_example(serialized)
    name = filename or "<reference record>"
    try:
        height = int(_get(example, REF_HEIGHT, "int64_list", name))
        width = int(_get(example, REF_WIDTH, "int64_list", name))
        image_raw = _get(example, REF_IMAGE_RAW, "bytes_list", name)
        annotation_raw = _get(example, REF_ANNOTATION_RAW, "bytes_list", name)
    except ValueError as e:
        raise BadSample(
            "corrupt_image", name, f"{e}; expected the reference keys height, width, image_raw, annotation_raw"
        ) from e
    if height <= 0 or width <= 0:
        raise BadSample("size_mismatch", name, f"height={height}, width={width} is not a valid image size")
    if len(image_raw) == height * width:
        # The notebook wrote imread() output as is: a grayscale JPEG became one channel.
        image = np.repeat(np.frombuffer(image_raw, dtype=np.uint8).reshape(height, width, 1), 3, axis=2)
    elif len(image_raw) == height * width * 3:
        image = np.frombuffer(image_raw, dtype=np.uint8).reshape(height, width, 3)
    else:
        raise BadSample(
            "size_mismatch",
            name,
            f"image_raw has {len(image_raw)} bytes but height*width*3 = "
            f"{height * width * 3}; the record is truncated or its height/width are wrong",
        )
    if len(annotation_raw) != height * width:
        raise BadSample(
            "size_mismatch",
            name,
            f"annotation_raw has {len(annotation_raw)} bytes but height*width = "
            f"{height * width}; the record is truncated or its height/width are wrong",
        )
    mask = np.frombuffer(annotation_raw, dtype=np.uint8).reshape(height, width)
    label_map = _label_map(label_map)
    if label_map is not None:
        mask = _encode_with_label_map(label_map, mask, name)
    else:
        _check_labels(mask, name, num_classes)
    sample = Sample(
        image_bytes=_encode_png(image),
        image_format="png",
        mask_png=_encode_png(mask),
        height=height,
        width=width,
        filename=filename,
        converted=None,
    )
    return to_example(sample)


def reference_example(image, mask):
    """A reference-format record (as the sthalles notebook writes it) for an RGB image and a mask.

    Used by tests and by tools that need reference-format inputs.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    return _features(
        {
            REF_HEIGHT: image.shape[0],
            REF_WIDTH: image.shape[1],
            REF_IMAGE_RAW: image.tobytes(),
            REF_ANNOTATION_RAW: mask.tobytes(),
        }
    )

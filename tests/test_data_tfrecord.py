"""TFRecord codec: lossless round trips, every bad input, conversions and the reference format."""

import io

import numpy as np
import pytest
from PIL import Image

from data import tfrecord as tfr
from data.sbd import SbdDataset
from data.splits import SampleRef, resolve_recipe
from data.synthetic import encode_palette_png, generate_sbd_dataset, generate_voc_dataset
from data.voc import VocDevkit


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    return generate_voc_dataset(
        tmp_path_factory.mktemp("tfr"), num_train=3, num_val=1, seed=3, min_size=40, max_size=72
    )


def _roundtrip(ref):
    sample = tfr.load_sample(ref)
    serialized = tfr.to_example(sample).SerializeToString()
    return sample, tfr.parse_example_np(serialized), serialized


def _check_voc_roundtrip(voc):
    for image_id in voc.split_ids("trainval"):
        ref = SampleRef(image_id, "voc", voc.image_path(image_id), voc.mask_path(image_id))
        sample, (image, label, filename), _ = _roundtrip(ref)
        with open(ref.image_path, "rb") as f:
            assert sample.image_bytes == f.read(), "JPEG bytes must be copied unchanged"
        assert sample.image_format == "jpeg" and sample.converted is None and filename == image_id
        source_mask = np.asarray(Image.open(ref.mask_path))
        assert np.array_equal(label, source_mask), "decoded label must equal the palette indices, 255s included"
        assert np.array_equal(image, np.asarray(Image.open(ref.image_path)))
        assert (sample.height, sample.width) == label.shape == image.shape[:2]
    return label


def test_roundtrip_synthetic_voc(voc_root):
    label = _check_voc_roundtrip(VocDevkit(voc_root))
    assert 255 in label


def test_roundtrip_real_voc_sample(voc_sample_root):
    _check_voc_roundtrip(VocDevkit(voc_sample_root))


def test_tensorflow_decodes_the_same_pixels(voc_sample_root):
    """The training input pipeline decodes with tf.io; the mask PNG must give the same class ids there."""
    import tensorflow as tf

    voc = VocDevkit(voc_sample_root)
    image_id = voc.split_ids("val")[0]
    ref = SampleRef(image_id, "voc", voc.image_path(image_id), voc.mask_path(image_id))
    _, (image, label, _), serialized = _roundtrip(ref)
    features = tf.io.parse_single_example(
        serialized,
        {
            tfr.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
            tfr.LABEL_ENCODED: tf.io.FixedLenFeature([], tf.string),
            tfr.IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
            tfr.IMAGE_CHANNELS: tf.io.FixedLenFeature([], tf.int64),
        },
    )
    tf_label = tf.io.decode_png(features[tfr.LABEL_ENCODED], channels=1)[..., 0].numpy()
    assert np.array_equal(tf_label, label)
    assert int(features[tfr.IMAGE_HEIGHT]) == label.shape[0] and int(features[tfr.IMAGE_CHANNELS]) == 3
    # PIL decodes with libjpeg's accurate integer DCT; TF's default (fast DCT) differs by a few levels.
    tf_image = tf.io.decode_jpeg(features[tfr.IMAGE_ENCODED], channels=3, dct_method="INTEGER_ACCURATE").numpy()
    assert np.array_equal(tf_image, image)


def test_roundtrip_sbd_mat(tmp_path_factory):
    out = tmp_path_factory.mktemp("sbd")
    sbd = SbdDataset(generate_sbd_dataset(out, num_train=2, num_val=0, seed=4, min_size=24, max_size=40))
    for ref in resolve_recipe("sbd_train", sbd_root=sbd.root):
        sample, (image, label, _), _ = _roundtrip(ref)
        from data.sbd import read_sbd_mask

        assert np.array_equal(label, read_sbd_mask(ref.mask_path))
        assert sample.image_format == "jpeg" and image.shape[:2] == label.shape


# --- bad inputs, each built in tmp_path -------------------------------------------------------------


def _jpeg(array=None, mode="RGB", size=(20, 16)):
    buf = io.BytesIO()
    if array is None:
        rng = np.random.default_rng(0)
        array = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).convert(mode).save(buf, format="JPEG")
    return buf.getvalue()


def _mask(shape=(16, 20), values=(0, 1, 255)):
    mask = np.zeros(shape, np.uint8)
    for k, v in enumerate(values):
        mask[k :: len(values)] = v
    return mask


def _pair(tmp_path, image_bytes, mask_bytes, image_name="img.jpg", mask_name="mask.png"):
    image_path, mask_path = tmp_path / image_name, tmp_path / mask_name
    if image_bytes is not None:
        image_path.write_bytes(image_bytes)
    if mask_bytes is not None:
        mask_path.write_bytes(mask_bytes)
    return SampleRef("x", "voc", str(image_path), str(mask_path))


def _png(array, mode=None):
    buf = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buf, format="PNG")
    return buf.getvalue()


def _bad(ref, reason, *message_parts):
    with pytest.raises(tfr.BadSample) as info:
        tfr.load_sample(ref)
    err = info.value
    assert err.reason == reason and err.reason in tfr.REASONS
    for part in message_parts:
        assert part in str(err), f"{part!r} not in {err}"
    return err


def test_bad_sample_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(tfr.BadSample("size_mismatch", "/a/b.png", "mask is 3x4")))
    assert (err.reason, err.path, err.detail) == ("size_mismatch", "/a/b.png", "mask is 3x4")
    assert str(err) == "size_mismatch: /a/b.png: mask is 3x4"
    err.path = "/a/b.png (record 7)"
    assert str(err) == "size_mismatch: /a/b.png (record 7): mask is 3x4"


def test_unsupported_mask_mode(tmp_path):
    two_channel = Image.fromarray(_mask()).convert("LA")
    buf = io.BytesIO()
    two_channel.save(buf, format="PNG")
    _bad(_pair(tmp_path, _jpeg(), buf.getvalue()), "unsupported_mask", "mode LA", "class ids")


def test_missing_image_and_mask(tmp_path):
    err = _bad(_pair(tmp_path, None, encode_palette_png(_mask())), "missing_image", "img.jpg", "remove the id")
    assert err.path.endswith("img.jpg")
    _bad(_pair(tmp_path, _jpeg(), None, mask_name="none.png"), "missing_mask", "none.png")


def test_corrupt_and_truncated_jpeg(tmp_path):
    mask = encode_palette_png(_mask())
    _bad(_pair(tmp_path, b"\xff\xd8\xff\xe0 garbage, not a jpeg", mask), "corrupt_image", "img.jpg", "re-download")
    good = _jpeg()
    # Cut inside the entropy-coded data: the header is intact, only a full decode notices.
    _bad(_pair(tmp_path, good[: len(good) * 2 // 3], mask), "corrupt_image", "truncated")
    _bad(_pair(tmp_path, good[:-2], mask), "corrupt_image")  # only the end-of-image marker missing


def test_size_mismatch(tmp_path):
    err = _bad(
        _pair(tmp_path, _jpeg(size=(20, 16)), encode_palette_png(_mask((16, 21)))),
        "size_mismatch",
        "21x16",
        "20x16",
        "mask.png",
    )
    assert err.path.endswith("mask.png")


def test_rgb_mask(tmp_path):
    colour_mask = np.zeros((16, 20, 3), np.uint8)
    colour_mask[4:10, 4:10] = (128, 0, 0)
    _bad(_pair(tmp_path, _jpeg(), _png(colour_mask)), "rgb_mask", "mask.png", "palette")


def test_label_out_of_range_lists_values(tmp_path):
    mask = _mask(values=(0, 21, 15, 254, 255, 100))
    ref = _pair(tmp_path, _jpeg(), _png(mask))
    err = _bad(ref, "label_out_of_range", "[21, 100, 254]", "0..20")
    assert err.path.endswith("mask.png")
    # The range follows num_classes (other datasets): with 255 classes every value is valid.
    assert tfr.load_sample(ref, num_classes=255).height == 16


def test_corrupt_mask(tmp_path):
    _bad(_pair(tmp_path, _jpeg(), b"\x89PNG\r\n\x1a\n broken"), "corrupt_mask", "mask.png")
    _bad(_pair(tmp_path, _jpeg(), b"not matlab", mask_name="m.mat"), "corrupt_mask", "m.mat")


def test_grayscale_mask_of_class_ids_is_accepted(tmp_path):
    mask = _mask(values=(0, 7, 255))
    sample = tfr.load_sample(_pair(tmp_path, _jpeg(), _png(mask)))  # SegmentationClassAug style 'L' PNG
    _, label, _ = tfr.parse_example_np(tfr.to_example(sample))
    assert np.array_equal(label, mask)


@pytest.mark.parametrize(
    "mode,name,expected",
    [
        ("L", "img.jpg", "grayscale_to_rgb"),
        ("CMYK", "img.jpg", "cmyk_to_rgb"),
        ("RGBA", "img.png", "rgba_to_rgb"),
        ("P", "img.png", "palette_to_rgb"),
        ("I;16", "img.png", "grayscale16_to_rgb"),
    ],
)
def test_image_modes_are_converted(tmp_path, mode, name, expected):
    rgb = np.random.default_rng(1).integers(0, 255, size=(16, 20, 3), dtype=np.uint8)
    source = Image.fromarray(rgb).convert("L" if mode == "I;16" else mode)
    if mode == "I;16":
        source = Image.fromarray(np.asarray(source).astype(np.uint16) * 257)
    buf = io.BytesIO()
    source.save(buf, format="JPEG" if name.endswith(".jpg") else "PNG")
    mask = _mask()
    sample = tfr.load_sample(_pair(tmp_path, buf.getvalue(), encode_palette_png(mask), image_name=name))
    assert sample.converted == expected and sample.image_format == "png"
    image, label, _ = tfr.parse_example_np(tfr.to_example(sample).SerializeToString())
    assert image.shape == (16, 20, 3) and np.array_equal(label, mask)
    decoded_source = Image.open(io.BytesIO(buf.getvalue()))
    if mode in ("L", "I;16"):
        gray = np.asarray(decoded_source.convert("L") if mode == "L" else source).astype(np.int64)
        gray = gray // 257 if mode == "I;16" else gray
        assert np.array_equal(image[..., 0], gray) and np.array_equal(image[..., 0], image[..., 2])
    else:
        assert np.array_equal(image, np.asarray(decoded_source.convert("RGB")))


def test_rgb_png_image_is_copied(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 255, size=(16, 20, 3), dtype=np.uint8)
    png = _png(rgb)
    sample = tfr.load_sample(_pair(tmp_path, png, encode_palette_png(_mask()), image_name="img.png"))
    assert sample.image_bytes == png and sample.image_format == "png" and sample.converted is None


def _png_chunks(data):
    """[(kind, body)] of a PNG file."""
    import struct

    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def test_palette_mask_is_relabelled_without_reencoding(tmp_path):
    """An 8-bit palette mask becomes a grayscale PNG of the same compressed pixels (header rewritten, palette
    dropped); PIL and TensorFlow decode it to the class ids."""
    mask = _mask(values=(0, 3, 20, 255))
    source = encode_palette_png(mask)
    sample = tfr.load_sample(_pair(tmp_path, _jpeg(), source))
    out = _png_chunks(sample.mask_png)
    assert [kind for kind, _ in out] == [b"IHDR", b"IDAT", b"IEND"]
    assert out[0][1][8:10] == b"\x08\x00"  # bit depth 8, colour type 0 (grayscale)
    assert [body for kind, body in out if kind == b"IDAT"] == [b for k, b in _png_chunks(source) if k == b"IDAT"]
    decoded = Image.open(io.BytesIO(sample.mask_png))
    assert decoded.mode == "L" and np.array_equal(np.asarray(decoded), mask)
    import tensorflow as tf

    assert np.array_equal(tf.io.decode_png(sample.mask_png, channels=1)[..., 0].numpy(), mask)


def test_masks_that_cannot_be_relabelled_are_reencoded(tmp_path):
    mask = _mask(values=(0, 3, 15))
    # A 4-bit palette PNG (bit depth below 8), and a palette PNG whose IDAT CRC is wrong (libpng would reject it).
    four_bit = io.BytesIO()
    Image.fromarray(mask).convert("P").save(four_bit, format="PNG", bits=4)
    assert _png_chunks(four_bit.getvalue())[0][1][8] == 4
    source = bytearray(encode_palette_png(mask))
    idat = source.index(b"IDAT") - 4  # the chunk's length field
    source[idat + 8 + int.from_bytes(source[idat : idat + 4], "big")] ^= 0xFF  # first byte of its CRC
    for data in (four_bit.getvalue(), bytes(source)):
        sample = tfr.load_sample(_pair(tmp_path, _jpeg(), data))
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(sample.mask_png))), mask)
        assert tfr._png_as_class_ids(data) is None  # pylint: disable=protected-access


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_size_is_read_before_the_reduced_validation_decode(tmp_path, progressive):
    """RGB JPEGs are validated by a 1/8-scale decode; the recorded size is the full one, for any size."""
    rgb = np.random.default_rng(3).integers(0, 255, size=(23, 37, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", progressive=progressive)
    good = buf.getvalue()
    sample = tfr.load_sample(_pair(tmp_path, good, encode_palette_png(_mask((23, 37)))))
    assert (sample.height, sample.width, sample.image_bytes) == (23, 37, good)
    _bad(_pair(tmp_path, good[: len(good) * 3 // 4], encode_palette_png(_mask((23, 37)))), "corrupt_image")


def test_example_bytes_is_the_protobuf_encoding():
    """The hand-written wire format equals the protobuf library's deterministic serialization, edge values too."""
    light = tfr._light_example_class()  # pylint: disable=protected-access
    for sample in (
        tfr.Sample(bytes(range(256)) * 300, "jpeg", b"\x89PNG", 375, 500, "2007_000033", None),
        tfr.Sample(b"", "png", b"", 0, 1, "", None),
        tfr.Sample(b"x", "png", b"y", 2**40, -3, "\u00e9t\u00e9", "cmyk_to_rgb"),
    ):
        expected = light()
        for key, value in (
            (tfr.IMAGE_ENCODED, sample.image_bytes),
            (tfr.IMAGE_FILENAME, sample.filename.encode()),
            (tfr.IMAGE_FORMAT, sample.image_format.encode()),
            (tfr.IMAGE_HEIGHT, sample.height),
            (tfr.IMAGE_WIDTH, sample.width),
            (tfr.IMAGE_CHANNELS, 3),
            (tfr.LABEL_ENCODED, sample.mask_png),
            (tfr.LABEL_FORMAT, b"png"),
        ):
            if isinstance(value, bytes):
                expected.features.feature[key].bytes_list.value.append(value)
            else:
                expected.features.feature[key].int64_list.value.append(value)
        assert tfr.example_bytes(sample) == expected.SerializeToString(deterministic=True)
        assert tfr.parse_light_example(tfr.example_bytes(sample)) == expected


def test_parse_rejects_malformed_records():
    import tensorflow as tf

    with pytest.raises(ValueError, match="image/encoded"):
        tfr.parse_example_np(tf.train.Example().SerializeToString())


# --- reference-repo records ---------------------------------------------------------------------------


def test_reference_record_conversion():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, size=(11, 13, 3), dtype=np.uint8)
    mask = _mask((11, 13), values=(0, 3, 20, 255))
    record = tfr.reference_example(image, mask).SerializeToString()
    example = tfr.reference_record_to_example(record, filename="ref_0")
    got_image, got_label, filename = tfr.parse_example_np(example.SerializeToString())
    assert np.array_equal(got_image, image) and np.array_equal(got_label, mask) and filename == "ref_0"
    feature = example.features.feature
    assert feature[tfr.IMAGE_FORMAT].bytes_list.value[0] == b"png"
    assert feature[tfr.LABEL_FORMAT].bytes_list.value[0] == b"png"
    assert feature[tfr.IMAGE_CHANNELS].int64_list.value[0] == 3


def test_reference_record_grayscale_image():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    record = tfr.reference_example(np.zeros((3, 4, 3), np.uint8), np.zeros((3, 4), np.uint8))
    record.features.feature[tfr.REF_IMAGE_RAW].bytes_list.value[0] = gray.tobytes()
    image, _, _ = tfr.parse_example_np(tfr.reference_record_to_example(record.SerializeToString()))
    assert image.shape == (3, 4, 3) and all(np.array_equal(image[..., c], gray) for c in range(3))


def test_reference_record_errors():
    import tensorflow as tf

    image = np.zeros((4, 5, 3), np.uint8)
    example = tfr.reference_example(image, np.zeros((4, 5), np.uint8))
    example.features.feature[tfr.REF_HEIGHT].int64_list.value[0] = 5
    with pytest.raises(tfr.BadSample, match="image_raw has 60 bytes but height\\*width\\*3 = 75") as info:
        tfr.reference_record_to_example(example.SerializeToString(), filename="r1")
    assert info.value.reason == "size_mismatch" and info.value.path == "r1"
    short = tfr.reference_example(image, np.zeros((4, 4), np.uint8))
    with pytest.raises(tfr.BadSample, match="annotation_raw has 16 bytes"):
        tfr.reference_record_to_example(short)
    with pytest.raises(tfr.BadSample, match="label_out_of_range|outside") as info:
        tfr.reference_record_to_example(tfr.reference_example(image, np.full((4, 5), 40, np.uint8)))
    assert info.value.reason == "label_out_of_range"
    with pytest.raises(tfr.BadSample, match="image_raw"):
        tfr.reference_record_to_example(tf.train.Example().SerializeToString())


def test_remote_file_system_paths(voc_root):
    """Paths with a scheme go through tf.io.gfile (gs:// on Dataflow); TF's in-memory ram:// stands in here."""
    import os

    import tensorflow as tf

    base = os.path.dirname(voc_root)
    for dirpath, _, files in os.walk(base):
        for name in files:
            src = os.path.join(dirpath, name)
            dst = "ram://tfr-test/devkit/" + os.path.relpath(src, base)
            tf.io.gfile.makedirs(os.path.dirname(dst))
            tf.io.gfile.copy(src, dst, overwrite=True)
    voc = VocDevkit("ram://tfr-test/devkit")  # the parent of VOC2012 is resolved remotely too
    assert voc.root == "ram://tfr-test/devkit/VOC2012"
    refs = resolve_recipe("voc_trainval", voc_root=voc.root)
    sample = tfr.load_sample(refs[0])
    with open(os.path.join(voc_root, "JPEGImages", f"{refs[0].id}.jpg"), "rb") as f:
        assert sample.image_bytes == f.read()
    missing = refs[0]._replace(image_path="ram://tfr-test/devkit/VOC2012/JPEGImages/none.jpg")
    with pytest.raises(tfr.BadSample, match="missing_image"):
        tfr.load_sample(missing)

"""Input pipeline over ExampleGen-style GZIP TFRecords; `write_records` is shared by the test_train_* files."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import tfrecord
from data.synthetic import encode_jpeg, render_sample
from models import hparams as hparams_lib
from models import input_pipeline


def _png(label):
    buffer = io.BytesIO()
    Image.fromarray(label, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_records(path, count, seed=0, sizes=((40, 56), (37, 45))):
    """GZIP TFRecord of `count` synthetic image/mask Examples (official keys); returns the samples."""
    rng = np.random.default_rng(seed)
    samples = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for i in range(count):
            height, width = sizes[i % len(sizes)]
            image, label = render_sample(rng, height, width)
            sample = tfrecord.Sample(
                image_bytes=encode_jpeg(image),
                image_format="jpeg",
                mask_png=_png(label),
                height=height,
                width=width,
                filename=f"img_{i}",
                converted=None,
            )
            writer.write(tfrecord.to_example(sample).SerializeToString())
            samples.append((image, label))
    return samples


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    write_records(root / "Split-train" / "data_tfrecord-00000-of-00001.gz", 6, seed=1)
    return root / "Split-train"


def test_train_batches_have_crop_shape_and_valid_labels(split_dir):
    hp = hparams_lib.preset("demo", crop_size=33, batch_size=3)
    images, labels = next(iter(input_pipeline.train_dataset(str(split_dir), hp, deterministic=True)))
    assert images.shape == (3, 33, 33, 3) and images.dtype == tf.float32
    assert labels.shape == (3, 33, 33, 1) and labels.dtype == tf.uint8
    values = set(np.unique(labels.numpy()))
    assert values <= set(range(21)) | {255}
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 255.0


def test_deterministic_mode_repeats_exactly(split_dir):
    hp = hparams_lib.preset("demo", crop_size=33, batch_size=2, color_jitter=0.2)
    first = [b[0].numpy() for b in input_pipeline.train_dataset(str(split_dir), hp, deterministic=True).take(4)]
    second = [b[0].numpy() for b in input_pipeline.train_dataset(str(split_dir), hp, deterministic=True).take(4)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    other = [b[0].numpy() for b in input_pipeline.train_dataset(str(split_dir), hp, deterministic=True, seed=7).take(1)]
    assert not np.array_equal(other[0], first[0])


def test_padding_uses_mean_pixel_and_ignore_label():
    image = tf.fill((4, 5, 3), 10.0)
    label = tf.zeros((4, 5, 1), tf.uint8)
    padded_image, padded_label = input_pipeline.pad_to_size(image, label, 6, 8)
    assert padded_image.shape == (6, 8, 3)
    np.testing.assert_allclose(padded_image[5, 7], input_pipeline.MEAN_RGB, rtol=1e-6)
    np.testing.assert_array_equal(padded_image[:4, :5], image)
    assert int(padded_label[5, 7, 0]) == 255 and int(padded_label[0, 0, 0]) == 0


def test_augment_crops_small_images_with_padding():
    image = tf.fill((10, 12, 3), 200.0)
    label = tf.ones((10, 12, 1), tf.uint8)
    out_image, out_label = input_pipeline.augment(
        image, label, tf.constant([1, 2], tf.int64), crop_size=33, min_scale=1.0, max_scale=1.0, flip=False
    )
    assert out_image.shape == (33, 33, 3)
    assert int(tf.reduce_sum(tf.cast(out_label == 1, tf.int32))) == 120  # every labelled pixel kept
    assert int(tf.reduce_sum(tf.cast(out_label == 255, tf.int32))) == 33 * 33 - 120


def test_scaling_keeps_labels_nearest():
    image = tf.random.uniform((20, 20, 3), 0, 255)
    label = tf.constant(np.repeat(np.arange(4, dtype=np.uint8), 100).reshape(20, 20, 1))
    _, out_label = input_pipeline.augment(
        image, label, tf.constant([3, 4], tf.int64), crop_size=16, min_scale=1.7, max_scale=1.9
    )
    assert set(np.unique(out_label.numpy())) <= {0, 1, 2, 3}  # no interpolated ids


def test_eval_reads_whole_images_in_order(split_dir):
    batches = list(input_pipeline.eval_dataset(str(split_dir)))
    assert [tuple(b[0].shape[1:3]) for b in batches] == [(40, 56), (37, 45)] * 3
    padded = list(input_pipeline.eval_dataset(str(split_dir), batch_size=2))
    assert padded[0][0].shape == (2, 40, 56, 3)
    np.testing.assert_allclose(padded[0][0][1, 39, 55], input_pipeline.MEAN_RGB, rtol=1e-5)
    assert int(padded[0][1][1, 39, 55, 0]) == 255


def test_missing_files_are_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Split-train"):
        input_pipeline.list_files(str(tmp_path / "nothing" / "*"))


def _save(pil_image, fmt, **kwargs):
    buffer = io.BytesIO()
    pil_image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_decode_rgb_equals_pil():
    """Training and the export decode JPEGs to PIL's pixels, as the evaluator does (data.tfrecord.parse_example_np);
    TF's default fast DCT would be off by up to ~20 levels. PNG and grey JPEG come out as RGB too."""
    rng = np.random.default_rng(3)
    image, _ = render_sample(rng, 45, 61)
    noisy = np.clip(image.astype(np.int16) + rng.integers(-40, 41, image.shape), 0, 255).astype(np.uint8)
    rgb, grey = Image.fromarray(noisy, mode="RGB"), Image.fromarray(noisy[..., 0], mode="L")
    cases = [
        _save(rgb, "JPEG", quality=75),
        _save(rgb, "JPEG", quality=95, subsampling=0),
        _save(grey, "JPEG", quality=90),
        _save(rgb, "PNG"),
    ]
    decode = tf.function(input_signature=[tf.TensorSpec([], tf.string)])(input_pipeline.decode_rgb)
    assert decode.get_concrete_function().structured_outputs.shape.as_list() == [None, None, 3]
    for data in cases:
        want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        for got in (input_pipeline.decode_rgb(tf.constant(data)), decode(tf.constant(data))):
            assert got.dtype == tf.uint8
            np.testing.assert_array_equal(got.numpy(), want)
    with pytest.raises(tf.errors.InvalidArgumentError):
        input_pipeline.decode_rgb(tf.constant(b"not an image"))


def test_training_parser_equals_the_evaluator_parser_on_a_real_jpeg(voc_sample_root):
    from data.splits import resolve_recipe

    sample = tfrecord.load_sample(resolve_recipe("voc_train", voc_root=voc_sample_root)[0])
    assert sample.image_format == "jpeg"
    serialized = tfrecord.example_bytes(sample)
    image_tf, label_tf = input_pipeline.parse_example(tf.constant(serialized))
    image_np, label_np, _ = tfrecord.parse_example_np(serialized)
    np.testing.assert_array_equal(image_tf.numpy(), image_np)
    np.testing.assert_array_equal(label_tf.numpy()[..., 0], label_np)

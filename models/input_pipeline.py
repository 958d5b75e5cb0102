"""tf.data input pipeline over ExampleGen TFRecords (GZIP, official DeepLab keys, data/tfrecord.py).

Training: decode -> random scale (min_scale..max_scale; bilinear image, nearest label) -> pad to the
crop (image with the ImageNet mean pixel, label with IGNORE_LABEL) -> random crop -> random
left-right flip -> optional colour jitter -> batch. Evaluation: whole images, batch 1 (or padded
batches). All randomness is stateless and seeded by (seed, element index), so `deterministic=True`
(ordered reads and maps, no file shuffling) gives the same batches on every run.
"""

import numpy as np
import tensorflow as tf

from data import tfrecord
from data.voc import IGNORE_LABEL
from models.inference import MEAN_RGB  # the one pad value of images, training crops and inference alike

_FEATURES = {
    tfrecord.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
    tfrecord.LABEL_ENCODED: tf.io.FixedLenFeature((), tf.string),
    tfrecord.IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, default_value=""),
}


def list_files(patterns):
    """Sorted files matching one or more glob patterns or directories (a dir means dir/*); error if none."""
    if isinstance(patterns, (str, bytes)):
        patterns = [patterns]
    files = []
    for pattern in patterns:
        pattern = str(pattern)
        if tf.io.gfile.isdir(pattern):
            pattern = pattern.rstrip("/") + "/*"
        files.extend(tf.io.gfile.glob(pattern))
    files = sorted(set(files))
    if not files:
        raise FileNotFoundError(
            f"no TFRecord files match {list(patterns)}; expected an ExampleGen split "
            f"directory such as <examples>/Split-train/ holding data_tfrecord-*.gz"
        )
    return files


def _record_dataset(files, deterministic, seed):
    files_ds = tf.data.Dataset.from_tensor_slices(files)
    if not deterministic and len(files) > 1:
        files_ds = files_ds.shuffle(len(files), seed=seed)
    compression = "GZIP" if all(f.endswith(".gz") for f in files) else ""
    if any(f.endswith(".gz") for f in files) and not compression:
        raise ValueError(f"mixed GZIP and plain TFRecord files in {files[:5]}...; give one split directory")
    return files_ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
        cycle_length=min(4, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )


def decode_rgb(encoded):
    """Encoded JPEG/PNG/GIF/BMP (string scalar) -> uint8 [H,W,3] with a static last dimension of 3.

    JPEGs use the accurate integer DCT so training, the serving signatures and the evaluator (PIL, through
    data.tfrecord.parse_example_np) see the same pixels; TF's default fast DCT is off by up to ~20 levels.
    """
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def parse_example(serialized):
    """Serialized tf.train.Example -> (image uint8 [H,W,3], label uint8 [H,W,1])."""
    features = tf.io.parse_single_example(serialized, _FEATURES)
    image = decode_rgb(features[tfrecord.IMAGE_ENCODED])
    label = tf.io.decode_png(features[tfrecord.LABEL_ENCODED], channels=1)
    tf.debugging.assert_equal(
        tf.shape(image)[:2],
        tf.shape(label)[:2],
        message="image and segmentation mask sizes differ in a TFRecord example",
    )
    return image, label


def pad_to_size(image, label, height, width):
    """Pad bottom/right up to at least (height, width): image with MEAN_RGB, label with IGNORE_LABEL."""
    shape = tf.shape(image)
    pad_h = tf.maximum(height - shape[0], 0)
    pad_w = tf.maximum(width - shape[1], 0)
    paddings = [[0, pad_h], [0, pad_w], [0, 0]]
    mean = tf.constant(MEAN_RGB, tf.float32)
    image = tf.pad(image - mean, paddings) + mean
    label = tf.pad(tf.cast(label, tf.int32) - IGNORE_LABEL, paddings) + IGNORE_LABEL
    return image, tf.cast(label, tf.uint8)


def augment(image, label, seed, crop_size, min_scale=0.5, max_scale=2.0, flip=True, color_jitter=0.0):
    """One training sample: float32 [crop,crop,3] RGB 0..255 and uint8 [crop,crop,1]. `seed`: int32 [2]."""
    seeds = tf.random.experimental.stateless_split(seed, num=6)
    image = tf.cast(image, tf.float32)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.random.stateless_uniform((), seeds[0], min_scale, max_scale)
    new_size = tf.maximum(tf.cast(tf.round(size * scale), tf.int32), 1)
    image = tf.image.resize(image, new_size, method="bilinear")
    label = tf.image.resize(label, new_size, method="nearest")
    image, label = pad_to_size(image, label, crop_size, crop_size)
    shape = tf.shape(image)
    top = tf.random.stateless_uniform((), seeds[1], 0, shape[0] - crop_size + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform((), seeds[2], 0, shape[1] - crop_size + 1, dtype=tf.int32)
    image = image[top : top + crop_size, left : left + crop_size]
    label = label[top : top + crop_size, left : left + crop_size]
    if flip:
        do_flip = tf.random.stateless_uniform((), seeds[3]) < 0.5
        image = tf.cond(do_flip, lambda: tf.reverse(image, [1]), lambda: image)
        label = tf.cond(do_flip, lambda: tf.reverse(label, [1]), lambda: label)
    if color_jitter:
        valid = tf.cast(label != IGNORE_LABEL, tf.float32)  # leave the mean-pixel padding alone
        jittered = tf.image.stateless_random_brightness(image / 255.0, color_jitter, seeds[4])
        jittered = tf.image.stateless_random_contrast(jittered, 1 - color_jitter, 1 + color_jitter, seeds[5])
        jittered = tf.clip_by_value(jittered, 0.0, 1.0) * 255.0
        image = valid * jittered + (1 - valid) * image
    image = tf.ensure_shape(image, (crop_size, crop_size, 3))
    label = tf.ensure_shape(label, (crop_size, crop_size, 1))
    return image, label


def train_dataset(
    patterns, hparams, batch_size=None, deterministic=False, seed=None, presence_fn=None, class_image_fraction=None
):
    """Infinite batches (image float32 [B,crop,crop,3], label uint8 [B,crop,crop,1]) for Model.fit.

    hparams.sampling "class_balanced" repeats images by their repeat factor (repeat_factor_sample): it needs
    presence_fn ([batch] serialized records -> [batch, C] class presence: models.transform.class_presence_fn, the
    transform graph) and class_image_fraction (f_c per class id, from the same graph)."""
    seed = hparams.seed if seed is None else seed
    batch_size = batch_size or hparams.batch_size
    files = list_files(patterns)
    records = _record_dataset(files, deterministic, seed)
    if hparams.sampling == "class_balanced":
        if presence_fn is None or class_image_fraction is None:
            raise ValueError("sampling='class_balanced' needs the transform graph's presence_fn and class fractions")
        ds = with_repeat_factors(records, presence_fn, class_image_fraction, hparams.repeat_threshold)
        ds = ds.map(
            lambda s, r: (parse_example(s), r), num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
        )
        if hparams.cache_decoded:
            ds = ds.cache()
        ds = repeat_factor_sample(ds, seed).shuffle(hparams.shuffle_buffer, seed=seed)
    else:
        ds = records.map(parse_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
        if hparams.cache_decoded:
            ds = ds.cache()
        ds = ds.shuffle(hparams.shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    # The element index seeds the augmentation: every repeat of an image gets new crops.
    ds = ds.enumerate().map(
        lambda i, example: augment(
            example[0],
            example[1],
            tf.stack([tf.cast(seed, tf.int64), i]),
            hparams.crop_size,
            hparams.min_scale,
            hparams.max_scale,
            hparams.flip,
            hparams.color_jitter,
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return _with_options(ds, deterministic)


def repeat_factors(presence, class_image_fraction, threshold):
    """LVIS repeat factors r_i = max over the classes c in image i of max(1, sqrt(t / f_c)) (1 for an image
    without a class id). presence: [..., C] 0/1 tensor; returns float32 [...]."""
    fractions = np.maximum(np.asarray(class_image_fraction, np.float64), 1e-12)
    per_class = tf.constant(np.maximum(1.0, np.sqrt(float(threshold) / fractions)), tf.float64)
    present = tf.cast(presence, tf.float64)
    return tf.cast(tf.maximum(tf.constant(1.0, tf.float64), tf.reduce_max(present * per_class, axis=-1)), tf.float32)


def with_repeat_factors(records, presence_fn, class_image_fraction, threshold, batch_size=64):
    """(serialized record, repeat factor r) of every record: the class presence of each image from presence_fn (the
    transform graph, applied here in tf.data), r by repeat_factors (the LVIS rule)."""

    def factors(serialized):
        return serialized, repeat_factors(presence_fn(serialized), class_image_fraction, threshold)

    return records.batch(batch_size).map(factors).unbatch()


def repeat_factor_sample(ds, seed):
    """An infinite stream of the elements of `ds` ((element, r) pairs): in every pass over ds each element appears
    floor(r) + Bernoulli(r - floor(r)) times, r on average (stochastic rounding seeded by (seed, position))."""

    def copies(i, pair):
        element, r = pair
        u = tf.random.stateless_uniform((), tf.stack([tf.cast(seed, tf.int64), i]))
        whole = tf.floor(r)
        count = tf.cast(whole, tf.int64) + tf.cast(u < r - whole, tf.int64)
        return tf.data.Dataset.from_tensors(element).repeat(count)

    return ds.repeat().enumerate().flat_map(copies)


def eval_dataset(patterns, batch_size=1, repeat=False, drop_remainder=False):
    """Whole validation images in file order: float32 [B,H,W,3] and uint8 [B,H,W,1].

    batch_size > 1 pads each batch to its largest image (mean pixel / IGNORE_LABEL), which the
    ignore mask keeps out of the metric but still changes context near the border; batch 1 is exact.
    """
    ds = _record_dataset(list_files(patterns), True, 0).map(
        lambda s: tuple(_to_float(*parse_example(s))), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if batch_size == 1:
        ds = ds.batch(1)
    else:
        # padded_batch pads with one scalar: pad (image - mean) with 0 so the padding is the mean pixel.
        mean = tf.constant(MEAN_RGB, tf.float32)
        ds = ds.map(lambda image, label: (image - mean, label))
        ds = ds.padded_batch(
            batch_size, padding_values=(0.0, tf.constant(IGNORE_LABEL, tf.uint8)), drop_remainder=drop_remainder
        )
        ds = ds.map(lambda image, label: (image + mean, label))
    if repeat:
        ds = ds.repeat()
    return _with_options(ds.prefetch(tf.data.AUTOTUNE), True)


def _to_float(image, label):
    return tf.cast(image, tf.float32), label


def _with_options(ds, deterministic):
    options = tf.data.Options()
    options.deterministic = deterministic
    # ExampleGen often writes one file per split: shard by element, not by file, across workers.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)

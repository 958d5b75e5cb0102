"""tf.Transform: the dataset statistics of training, computed once by full-pass analyzers.

One `preprocessing_fn` serves three callers: the pipeline's standard `tfx.components.Transform` (on Beam, over the
training split only, `materialize=False`: its output is the transform graph alone), the Trainer (which reads every
dataset statistic from that graph, `DatasetStatistics.from_transform_output`, and applies it to the raw records
for class-balanced sampling, `class_presence_fn`) and `deeplab train` outside the pipeline (`analyze_files` runs
the same function with tft_beam on the DirectRunner in this process). The export records the statistics and bakes
the dataset mean/std in as constants (models.export): serving needs no TFT op.

The images are not resized or padded (DeepLab trains on random-scale crops of whole images): every statistic is a
per-example fixed-size vector (a bincount of the decoded mask, channel sums of the decoded image) reduced over the
split by `tft.sum`, in int64, so the counts and sums are exact whatever the image sizes.

Outputs of the transform graph (every one per example, shape [batch, K]):
  class_presence   int64 [num_classes]      1 where the example's mask holds the class id (the per-image input of
                                            repeat-factor sampling)
  class_pixels     int64 [num_classes + 1]  pixels per class id over the split; the last bin is the ignore label
  class_images     int64 [num_classes]      images containing each class id
  num_examples     int64 [1]
  channel_sum      int64 [3]                sum of the R, G, B values of every pixel
  channel_sum_sq   int64 [3]                sum of their squares
  pixel_count      int64 [1]
The last six are analyzer results (the same for every example): `DatasetStatistics` reads them.
"""

import dataclasses
import functools
import logging
import math
import os
import tempfile
import time

import numpy as np

from data import tfrecord

log = logging.getLogger(__name__)

# custom_config of the Transform component (and of preprocessing_fn): the label map's class count and ignore label.
NUM_CLASSES_KEY = "num_classes"
IGNORE_LABEL_KEY = "ignore_label"

PRESENCE = "class_presence"
CLASS_PIXELS = "class_pixels"
CLASS_IMAGES = "class_images"
NUM_EXAMPLES = "num_examples"
CHANNEL_SUM = "channel_sum"
CHANNEL_SUM_SQ = "channel_sum_sq"
PIXEL_COUNT = "pixel_count"
STATISTICS = (CLASS_PIXELS, CLASS_IMAGES, NUM_EXAMPLES, CHANNEL_SUM, CHANNEL_SUM_SQ, PIXEL_COUNT)

# Features the preprocessing_fn reads (data/tfrecord.py keys); the curated schema (pipeline/schema/schema.pbtxt)
# gives them no fixed shape, so TFT feeds them as SparseTensors, as RAW_FEATURE_SPEC does here.
INPUT_KEYS = (tfrecord.IMAGE_ENCODED, tfrecord.LABEL_ENCODED, tfrecord.IMAGE_FILENAME)
STATISTICS_FILENAME = "dataset_statistics.json"


def transform_config(num_classes, ignore_label):
    """The custom_config of the Transform component: what preprocessing_fn needs of the label map."""
    return {NUM_CLASSES_KEY: int(num_classes), IGNORE_LABEL_KEY: int(ignore_label)}


def raw_feature_spec():
    """The parsing spec of the raw records the curated schema describes (no fixed shape: VarLenFeature)."""
    import tensorflow as tf

    return {key: tf.io.VarLenFeature(tf.string) for key in INPUT_KEYS}


def _scalar(feature):
    """A [batch] string tensor from TFT's per-feature input (SparseTensor for the schema's no-shape features)."""
    import tensorflow as tf

    if isinstance(feature, tf.SparseTensor):
        return tf.reshape(tf.sparse.to_dense(feature, default_value=b"")[:, :1], [-1])
    if isinstance(feature, tf.RaggedTensor):
        return tf.reshape(feature.to_tensor(default_value=b"", shape=[None, 1]), [-1])
    return tf.reshape(feature, [-1])


def example_vectors(images, masks, filenames, num_classes, ignore_label):
    """Per-example fixed-size vectors of [batch] encoded images and masks: (class bincount [B, C + 1] with the ignore
    label in bin C, channel sums [B, 3], channel sums of squares [B, 3], pixel counts [B]), all int64, and an assert
    op failing with the names of the records whose masks hold a value outside 0..C-1 and the ignore label."""
    import tensorflow as tf

    from models.input_pipeline import decode_rgb

    def one(args):
        image_bytes, mask_bytes = args
        mask = tf.cast(tf.reshape(tf.io.decode_png(mask_bytes, channels=1), [-1]), tf.int32)
        outside = tf.logical_and(mask >= num_classes, mask != ignore_label)
        bins = tf.where(mask == ignore_label, num_classes, tf.minimum(mask, num_classes))
        counts = tf.math.bincount(bins, minlength=num_classes + 1, maxlength=num_classes + 1, dtype=tf.int64)
        pixels = tf.cast(tf.reshape(decode_rgb(image_bytes), [-1, 3]), tf.int64)
        return (
            counts,
            tf.reduce_sum(pixels, 0),
            tf.reduce_sum(pixels * pixels, 0),
            tf.shape(pixels, out_type=tf.int64)[0],
            tf.reduce_any(outside),
            tf.reduce_max(tf.where(outside, mask, -1)),
        )

    counts, sums, squares, count, bad, bad_value = tf.map_fn(
        one,
        (images, masks),
        fn_output_signature=(
            tf.TensorSpec([num_classes + 1], tf.int64),
            tf.TensorSpec([3], tf.int64),
            tf.TensorSpec([3], tf.int64),
            tf.TensorSpec([], tf.int64),
            tf.TensorSpec([], tf.bool),
            tf.TensorSpec([], tf.int32),
        ),
    )
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [
            f"mask value outside the label map (class ids 0..{num_classes - 1} and the ignore label {ignore_label}); "
            "fix those masks or ingest with the label map that describes them (--label-map). Record(s) "
            "(image/filename), then the largest bad value of each:",
            tf.boolean_mask(filenames, bad),
            tf.boolean_mask(bad_value, bad),
        ],
        summarize=20,
    )
    return counts, sums, squares, count, check


def preprocessing_fn(inputs, custom_config=None):
    """TFT preprocessing_fn (TFX Transform calls it with the component's custom_config: transform_config())."""
    import tensorflow as tf
    import tensorflow_transform as tft

    config = custom_config or {}
    num_classes = int(config.get(NUM_CLASSES_KEY, tfrecord.NUM_CLASSES))
    ignore_label = int(config.get(IGNORE_LABEL_KEY, tfrecord.IGNORE_LABEL))
    filenames = _scalar(inputs[tfrecord.IMAGE_FILENAME])
    counts, sums, squares, count, check = example_vectors(
        _scalar(inputs[tfrecord.IMAGE_ENCODED]),
        _scalar(inputs[tfrecord.LABEL_ENCODED]),
        filenames,
        num_classes,
        ignore_label,
    )
    with tf.control_dependencies([check]):
        counts = tf.identity(counts)
    presence = tf.cast(counts[:, :num_classes] > 0, tf.int64)
    # One analyzer for every statistic: a single int64 vector per example, summed over the split by one tft.sum
    # (one combiner, one cache entry: each extra analyzer cost seconds of graph building and cache writes).
    parts = {
        CLASS_PIXELS: counts,
        CLASS_IMAGES: presence,
        NUM_EXAMPLES: tf.ones_like(count)[:, None],
        CHANNEL_SUM: sums,
        CHANNEL_SUM_SQ: squares,
        PIXEL_COUNT: count[:, None],
    }
    sizes = {CLASS_PIXELS: num_classes + 1, CLASS_IMAGES: num_classes, CHANNEL_SUM: 3, CHANNEL_SUM_SQ: 3}
    totals = tft.sum(tf.concat([parts[name] for name in STATISTICS], axis=1), reduce_instance_dims=False)
    batch = tf.shape(filenames)[0]
    outputs = {PRESENCE: presence}
    start = 0
    for name in STATISTICS:
        size = sizes.get(name, 1)
        value = tf.reshape(tf.cast(totals[start : start + size], tf.int64), [1, size])
        outputs[name] = tf.tile(value, [batch, 1])  # analyzer results, the same for every example
        start += size
    return outputs


@dataclasses.dataclass(frozen=True)
class DatasetStatistics:
    """The training split's statistics read from a transform graph (exact integer counts and sums)."""

    class_pixels: tuple  # pixels per class id 0..C-1
    ignore_pixels: int
    class_images: tuple  # images containing each class id
    num_examples: int
    channel_sum: tuple
    channel_sum_sq: tuple
    pixel_count: int
    source: str = ""  # where they came from (the transform graph's path), for logs and the export

    @property
    def num_classes(self):
        return len(self.class_pixels)

    @property
    def channel_mean(self):
        """Per-channel mean of the training pixels (float64 from the exact sums)."""
        return tuple(s / self.pixel_count for s in self.channel_sum)

    @property
    def channel_std(self):
        """Per-channel (population) standard deviation: sqrt(E[x^2] - E[x]^2) from the exact integer sums."""
        n = self.pixel_count
        return tuple(math.sqrt(max(q * n - s * s, 0) / (n * n)) for s, q in zip(self.channel_sum, self.channel_sum_sq))

    @property
    def class_image_fraction(self):
        """f_c: the fraction of training images containing each class."""
        return tuple(c / self.num_examples for c in self.class_images)

    def to_json_dict(self):
        return {
            "source": self.source,
            "num_examples": self.num_examples,
            "class_pixels": list(self.class_pixels),
            "ignore_pixels": self.ignore_pixels,
            "class_images": list(self.class_images),
            "pixel_count": self.pixel_count,
            "channel_mean": list(self.channel_mean),
            "channel_std": list(self.channel_std),
        }

    @classmethod
    def from_transform_output(cls, tft_output, source=None):
        """Reads the analyzer results of a transform graph (a tft.TFTransformOutput or its folder): runs the graph
        on one tiny built-in record (its outputs other than class_presence do not depend on the input)."""
        import tensorflow as tf
        import tensorflow_transform as tft

        if isinstance(tft_output, (str, os.PathLike)):
            source = source or str(tft_output)
            tft_output = tft.TFTransformOutput(str(tft_output))
        outputs = transform_fn(tft_output)(tf.constant([_probe_record()]))
        values = {name: outputs[name][0].numpy().astype(np.int64).tolist() for name in STATISTICS}
        if not values[NUM_EXAMPLES][0]:
            raise ValueError(f"the transform graph {source} was analyzed over no training example")
        return cls(
            class_pixels=tuple(values[CLASS_PIXELS][:-1]),
            ignore_pixels=values[CLASS_PIXELS][-1],
            class_images=tuple(values[CLASS_IMAGES]),
            num_examples=values[NUM_EXAMPLES][0],
            channel_sum=tuple(values[CHANNEL_SUM]),
            channel_sum_sq=tuple(values[CHANNEL_SUM_SQ]),
            pixel_count=values[PIXEL_COUNT][0],
            source=source or "",
        )


@functools.lru_cache(maxsize=1)
def _probe_record():
    """A serialized 1x1 record (black pixel, class 0) to read the analyzer results with."""
    import io

    from PIL import Image

    def png(mode, value):
        buf = io.BytesIO()
        Image.new(mode, (1, 1), value).save(buf, format="PNG")
        return buf.getvalue()

    sample = tfrecord.Sample(png("RGB", (0, 0, 0)), "png", png("L", 0), 1, 1, "probe", None)
    return tfrecord.example_bytes(sample)


def transform_fn(tft_output):
    """[batch] serialized raw records -> the transform graph's outputs (dict). The Keras layer is built once here,
    so the function can go into tf.data.Dataset.map."""
    layer = tft_output.transform_features_layer()

    def transform(serialized):
        import tensorflow as tf

        return layer(tf.io.parse_example(serialized, raw_feature_spec()))

    return transform


def class_presence_fn(tft_output):
    """A tf.data-ready function: [batch] serialized records -> int64 [batch, num_classes] class presence, computed
    by the transform graph (the same decode and bincount as the analyzers)."""
    transform = transform_fn(tft_output)
    return lambda serialized: transform(serialized)[PRESENCE]


def check_nonempty(files):
    """Raises ValueError naming the files when they hold no record (before a Beam pipeline starts on them)."""
    import tensorflow as tf

    compression = "GZIP" if all(str(f).endswith(".gz") for f in files) else ""
    for _ in tf.data.TFRecordDataset(list(files), compression_type=compression).take(1):
        return
    raise ValueError(
        f"the training split is empty: no record in {list(files)[:5]}; the dataset statistics (class weights, "
        "normalization, sampling) need at least one training example: check the ingest report"
    )


def analyze_files(train_files, output_dir, num_classes, ignore_label, beam_args=None):
    """Runs preprocessing_fn's analyzers over the records of `train_files` in this process (tft_beam, DirectRunner)
    and writes the transform graph to `output_dir`; returns output_dir. What the Transform component computes, for a
    training run without one (`deeplab train`)."""
    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx_bsl.public import tfxio

    from models.input_pipeline import list_files

    files = list_files(train_files)
    check_nonempty(files)
    import tensorflow_transform as tft

    schema = tft.DatasetMetadata.from_feature_spec(raw_feature_spec()).schema
    source = tfxio.TFExampleRecord(file_pattern=files, schema=schema)  # GZIP or not: detected per file
    fn = functools.partial(preprocessing_fn, custom_config=transform_config(num_classes, ignore_label))
    options = PipelineOptions(list(beam_args or ["--direct_running_mode=in_memory", "--direct_num_workers=1"]))
    # A run killed while writing (then resumed) leaves a partial graph that WriteTransformFn refuses to overwrite;
    # the statistics are recomputed from the records, so the old folder holds nothing worth keeping.
    if tf.io.gfile.exists(output_dir):
        tf.io.gfile.rmtree(output_dir)
    try:
        with tempfile.TemporaryDirectory() as temp, beam.Pipeline(options=options) as pipeline:
            with tft_beam.Context(temp_dir=temp, force_tf_compat_v1=False):
                raw = pipeline | "Read" >> source.BeamSource()
                transform_fn = (raw, source.TensorAdapterConfig()) | "Analyze" >> tft_beam.AnalyzeDataset(fn)
                _ = transform_fn | "Write" >> tft_beam.WriteTransformFn(output_dir)
    except Exception as e:  # pylint: disable=broad-except  # Beam wraps the mask check's assert in its own errors
        message = bad_mask_message(e)
        if message is None:
            raise
        raise ValueError(f"{message} (training examples {files[:3]}{'...' if len(files) > 3 else ''})") from None
    return output_dir


def bad_mask_message(error):
    """The one-line message of the mask check's failed assert inside `error` (however Beam wrapped it), or None."""
    import re

    text = str(error)
    start = text.find("mask value outside the label map")
    if start < 0:
        return None
    text = text[start:].split("\n\t [[", 1)[0].split("\n", 1)[0]
    text = re.sub(r"\s+", " ", text).replace("] [", " ").strip(" []")
    return text


def load_or_analyze(transform_graph, train_files, work_dir, num_classes, ignore_label):
    """(DatasetStatistics, TFTransformOutput, how): from `transform_graph` (the Transform component's output) when
    given, else from the same analyzers run here over `train_files` (written to work_dir/transform_graph)."""
    import tensorflow_transform as tft

    started = time.time()
    if transform_graph:
        how = f"the transform graph {transform_graph} (Transform component)"
    else:
        transform_graph = os.path.join(work_dir, "transform_graph")
        log.info("No transform graph given: analyzing the training examples in this process (tft_beam, DirectRunner)")
        analyze_files(train_files, transform_graph, num_classes, ignore_label)
        how = f"the transform graph {transform_graph} (analyzed in this process over the training examples)"
    output = tft.TFTransformOutput(transform_graph)
    stats = DatasetStatistics.from_transform_output(output, source=transform_graph)
    if stats.num_classes != num_classes:
        raise ValueError(
            f"the transform graph {transform_graph} counts {stats.num_classes} classes but the model has "
            f"{num_classes}; run the Transform with the training label map"
        )
    return stats, output, f"{how}, {stats.num_examples} examples, {time.time() - started:.1f} s"

"""The Beam evaluation: examples -> per-image confusion matrices -> one summed matrix per model.

Shared by the TFX executor and `deeplab evaluate`. Each worker loads the SavedModels once
(`DoFn.setup`) and calls their `logits` signature through `models.inference` with the chosen
test-time augmentation. Per-image confusion matrices are summed by a CombineFn (associative, so
any sharding gives the same integers); the same combine keeps per-image figures (for the
reference-style average) and the best/worst images (for the gallery). Records that cannot be
read are skipped, counted by reason (Beam counters and the result) and named in the report.
"""
import heapq
import logging
import os
import pickle
import time
import uuid

import apache_beam as beam
import numpy as np

from components.miou_evaluator import metrics
from data.voc import IGNORE_LABEL, NUM_CLASSES

log = logging.getLogger(__name__)

NAMESPACE = "miou_evaluator"
CURRENT = "current"
BASELINE = "baseline"
LOGITS_SIGNATURE = "logits"
SERVING_SUBDIR = "Format-Serving"  # tfx.utils.path_constants.SERVING_MODEL_DIR
MAX_SKIPPED_LISTED = 50


# ---------------------------------------------------------------------------------------------
# locating inputs

def resolve_model_dir(path):
    """The SavedModel directory for `path`: a SavedModel itself, or a Trainer Model artifact
    directory holding `Format-Serving/`. Raises FileNotFoundError naming what was looked for."""
    import tensorflow as tf

    path = str(path).rstrip("/")
    for candidate in (path, os.path.join(path, SERVING_SUBDIR)):
        if tf.io.gfile.exists(os.path.join(candidate, "saved_model.pb")):
            return candidate
    raise FileNotFoundError(
        f"no SavedModel at {path!r}: expected {path}/saved_model.pb or {path}/{SERVING_SUBDIR}/saved_model.pb "
        "(pass the export directory written by models.export, or the Trainer's model artifact directory)")


def resolve_examples(path, split="val"):
    """A TFRecord file pattern for `path`, which may be an ExampleGen Examples artifact directory
    (its `Split-<split>/`), a split directory, a single file or a glob. Raises FileNotFoundError
    (listing the splits found) when nothing matches."""
    import tensorflow as tf

    path = str(path).rstrip("/")
    if tf.io.gfile.isdir(path):
        split_dir = os.path.join(path, f"Split-{split}")
        if tf.io.gfile.isdir(split_dir):
            pattern = os.path.join(split_dir, "*")
        else:
            splits = sorted(n.rstrip("/")[len("Split-"):] for n in tf.io.gfile.listdir(path) if n.startswith("Split-"))
            if splits:
                raise FileNotFoundError(f"{path} has no split {split!r}; it holds splits {splits} (use --split)")
            pattern = os.path.join(path, "*")
    else:
        pattern = path
    files = [f for f in tf.io.gfile.glob(pattern) if not tf.io.gfile.isdir(f)]
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {pattern!r} (from {path!r})")
    return pattern


# ---------------------------------------------------------------------------------------------
# per-example work

def _load_predictor(model_dir, tta, num_classes):
    """A function uint8 image [H,W,3] -> int64 labels [H,W] running the model's `logits`
    signature with TTA; one tf.function with a dynamic input signature, so any size traces once."""
    import tensorflow as tf

    from models.inference import predict_logits

    loaded = tf.saved_model.load(model_dir)
    if LOGITS_SIGNATURE not in loaded.signatures:
        raise ValueError(f"SavedModel {model_dir} has no {LOGITS_SIGNATURE!r} signature (it has "
                         f"{sorted(loaded.signatures)}); export it with models.export.export_serving_model")
    signature = loaded.signatures[LOGITS_SIGNATURE]

    def logits_fn(images):
        return signature(images=images)["logits"]

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def labels_fn(images):
        logits = predict_logits(logits_fn, images, **tta.kwargs())
        return tf.argmax(logits, axis=-1, output_type=tf.int64), tf.shape(logits)[-1]

    def predict(image):
        labels, channels = labels_fn(tf.constant(image[np.newaxis], tf.float32))
        if int(channels) != num_classes:
            raise ValueError(f"model {model_dir} outputs {int(channels)} classes but the evaluation expects "
                             f"{num_classes}; pass the matching num_classes / class names")
        return labels.numpy()[0]

    predict.loaded = loaded  # keeps the SavedModel's variables alive with the function
    return predict


def _encode_png(array):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class EvaluateExampleFn(beam.DoFn):
    """Serialized tf.train.Example -> {'filename', 'models': {name: (cm, summary)}, 'payload'} or
    {'skipped': (reason, name, detail)} for a record that cannot be read."""

    def __init__(self, model_dirs, tta_json, num_classes=NUM_CLASSES, ignore_label=IGNORE_LABEL, log_every=25):
        self._model_dirs = dict(model_dirs)
        self._tta_json = dict(tta_json)
        self._num_classes = int(num_classes)
        self._ignore_label = int(ignore_label)
        self._log_every = int(log_every)
        self._images = beam.metrics.Metrics.counter(NAMESPACE, "images_evaluated")
        self._labelled = beam.metrics.Metrics.counter(NAMESPACE, "labelled_pixels")
        self._ignored = beam.metrics.Metrics.counter(NAMESPACE, "ignored_pixels")
        self._invalid = beam.metrics.Metrics.counter(NAMESPACE, "invalid_predictions")
        self._millis = beam.metrics.Metrics.distribution(NAMESPACE, "inference_ms_per_image")

    def setup(self):
        from models.inference import TTAConfig

        tta = TTAConfig.from_json_dict(self._tta_json)
        self._predictors = {name: _load_predictor(path, tta, self._num_classes)
                            for name, path in self._model_dirs.items()}
        self._seen = 0
        self._started = time.time()
        log.info("Loaded %s for evaluation (TTA: %s)",
                 ", ".join(f"{n}={p}" for n, p in self._model_dirs.items()), tta.describe())

    def process(self, serialized):
        from data.tfrecord import parse_example_np

        if isinstance(serialized, dict):  # a skipped sample from the VOC-root reader
            yield serialized
            return
        try:
            image, label, filename = parse_example_np(serialized)
        except Exception as e:  # a malformed record must not end a long evaluation
            beam.metrics.Metrics.counter(NAMESPACE, "skipped_bad_record").inc()
            yield {"skipped": ("bad_record", "<unnamed record>", str(e))}
            return
        out = {"filename": filename, "models": {}}
        for name, predict in self._predictors.items():
            start = time.time()
            pred = predict(image)
            self._millis.update(int(1000 * (time.time() - start)))
            try:
                cm = metrics.confusion_matrix(label, pred, self._num_classes, self._ignore_label)
            except ValueError as e:
                beam.metrics.Metrics.counter(NAMESPACE, "skipped_label_out_of_range").inc()
                yield {"skipped": ("label_out_of_range", filename, str(e))}
                return
            out["models"][name] = (cm, metrics.image_summary(cm))
            if name == CURRENT:
                self._invalid.inc(int(cm[:, -1].sum()))
                out["payload"] = (bytes(serialized), _encode_png(np.clip(pred, 0, 255)))
        labelled = int((label != self._ignore_label).sum())
        self._images.inc()
        self._labelled.inc(labelled)
        self._ignored.inc(int(label.size - labelled))
        self._seen += 1
        if self._seen % self._log_every == 0:
            log.info("evaluated %d images on this worker (%.2f s/image)", self._seen,
                     (time.time() - self._started) / self._seen)
        yield out


def _sample_to_record(ref, num_classes):
    """VOC-root path: SampleRef -> serialized Example, or a skipped record (reason from BadSample)."""
    from data.tfrecord import BadSample, load_sample, to_example

    try:
        return to_example(load_sample(ref, num_classes)).SerializeToString()
    except BadSample as e:
        beam.metrics.Metrics.counter(NAMESPACE, f"skipped_{e.reason}").inc()
        return {"skipped": (e.reason, e.path, e.detail)}


# ---------------------------------------------------------------------------------------------
# combining

def _gallery_key(summary, filename):
    return (summary["miou"], filename)


class CombineEvaluationFn(beam.CombineFn):
    """Sums confusion matrices per model and keeps per-image figures, skipped records, and the
    `num_gallery` best and worst images of the current model (with their payloads)."""

    def __init__(self, model_names, num_classes=NUM_CLASSES, num_gallery=4):
        self._names = list(model_names)
        self._num_classes = int(num_classes)
        self._k = int(num_gallery)

    def create_accumulator(self):
        return {
            "cm": {n: np.zeros((self._num_classes, self._num_classes + 1), np.int64) for n in self._names},
            "images": {n: [] for n in self._names},
            "skipped": [],
            "best": [],   # min-heap of ((miou, filename), payload): keeps the k largest
            "worst": [],  # min-heap of ((-miou, _Reverse(filename)), payload): keeps the k smallest
        }

    def _push(self, acc, miou, filename, payload):
        if self._k <= 0 or miou is None:
            return
        for heap, key in ((acc["best"], (miou, filename)), (acc["worst"], (-miou, _Reverse(filename)))):
            item = (key, payload)
            if len(heap) < self._k:
                heapq.heappush(heap, item)
            elif item[0] > heap[0][0]:
                heapq.heapreplace(heap, item)

    def add_input(self, acc, record):
        if "skipped" in record:
            acc["skipped"].append(record["skipped"])
            return acc
        for name in self._names:
            cm, summary = record["models"][name]
            acc["cm"][name] += cm
            acc["images"][name].append((record["filename"], summary))
        summary = record["models"][CURRENT][1]
        self._push(acc, summary["miou"], record["filename"], record.get("payload"))
        return acc

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for acc in accumulators:
            for name in self._names:
                merged["cm"][name] += acc["cm"][name]
                merged["images"][name].extend(acc["images"][name])
            merged["skipped"].extend(acc["skipped"])
            for which in ("best", "worst"):
                for item in acc[which]:
                    heap = merged[which]
                    if len(heap) < self._k:
                        heapq.heappush(heap, item)
                    elif item[0] > heap[0][0]:
                        heapq.heapreplace(heap, item)
        return merged

    def extract_output(self, acc):
        def ordered(heap):
            return sorted(heap, key=lambda kv: kv[0], reverse=True)

        return {
            "cm": acc["cm"],
            "images": {n: sorted(v, key=lambda fs: fs[0]) for n, v in acc["images"].items()},
            "skipped": sorted(acc["skipped"], key=lambda s: (s[0], s[1])),
            "best": [(k[1], p) for k, p in ordered(acc["best"])],
            "worst": [(k[1].value, p) for k, p in ordered(acc["worst"])],
        }


class _Reverse:
    """Orders strings backwards, so the worst-images heap breaks ties by filename like the best one."""

    def __init__(self, value):
        self.value = value

    def __lt__(self, other):
        return self.value > other.value

    def __gt__(self, other):
        return self.value < other.value

    def __eq__(self, other):
        return self.value == other.value

    def __reduce__(self):
        return (_Reverse, (self.value,))


def _write_pickle(result, path):
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))


# ---------------------------------------------------------------------------------------------
# the pipeline

def run_beam_evaluation(model_dirs, tta, staging_dir, examples_pattern=None, sample_refs=None,
                        make_pipeline=None, beam_args=None, num_classes=NUM_CLASSES,
                        ignore_label=IGNORE_LABEL, num_gallery=4, max_images=None):
    """Runs the evaluation pipeline and returns the combined raw result (see CombineEvaluationFn).

    model_dirs: {'current': dir, optionally 'baseline': dir} of SavedModels with a `logits` signature.
    tta: models.inference.TTAConfig.
    staging_dir: where the combined result is written by the pipeline (read back here).
    examples_pattern: TFRecord file pattern (GZIP detected from the .gz suffix), or
    sample_refs: a list of data.splits.SampleRef read straight from a dataset root.
    make_pipeline: () -> beam.Pipeline (the TFX executor passes its own); default: a pipeline
      from `beam_args` (DirectRunner unless they say otherwise).
    max_images: evaluate a random sample of N records (quick looks; the report says so).
    """
    import tensorflow as tf

    if (examples_pattern is None) == (sample_refs is None):
        raise ValueError("give exactly one of examples_pattern and sample_refs")
    if CURRENT not in model_dirs:
        raise ValueError(f"model_dirs needs a {CURRENT!r} model, got {sorted(model_dirs)}")
    names = [CURRENT] + [n for n in model_dirs if n != CURRENT]
    tf.io.gfile.makedirs(staging_dir)
    result_path = os.path.join(staging_dir, f"combined-{uuid.uuid4().hex}.pkl")
    if make_pipeline is None:
        def make_pipeline():
            from apache_beam.options.pipeline_options import PipelineOptions
            return beam.Pipeline(options=PipelineOptions(list(beam_args or [])))

    started = time.time()
    p = make_pipeline()
    if examples_pattern is not None:
        records = p | "ReadExamples" >> beam.io.ReadFromTFRecord(
            examples_pattern, coder=beam.coders.BytesCoder())
    else:
        records = (p | "Refs" >> beam.Create(list(sample_refs))
                   | "Reshuffle" >> beam.Reshuffle()
                   | "LoadSamples" >> beam.Map(_sample_to_record, num_classes))
    if max_images:
        records = (records | "Limit" >> beam.combiners.Sample.FixedSizeGlobally(int(max_images))
                   | "Unlist" >> beam.FlatMap(lambda xs: xs))
    _ = (records
         | "Evaluate" >> beam.ParDo(EvaluateExampleFn(model_dirs, tta.to_json_dict(), num_classes, ignore_label))
         | "Combine" >> beam.CombineGlobally(CombineEvaluationFn(names, num_classes, num_gallery))
         | "Write" >> beam.Map(_write_pickle, result_path))
    pipeline_result = p.run()
    pipeline_result.wait_until_finish()
    with tf.io.gfile.GFile(result_path, "rb") as f:
        raw = pickle.loads(f.read())
    tf.io.gfile.remove(result_path)
    raw["seconds"] = time.time() - started
    raw["model_dirs"] = dict(model_dirs)
    raw["counters"] = _counters(pipeline_result)
    log.info("Beam counters: %s", raw["counters"])
    return raw


def _counters(pipeline_result):
    """{name: value} of this module's Beam counters (empty where the runner does not report them)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        query = pipeline_result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except (NotImplementedError, AttributeError):
        return {}
    out = {}
    for c in query.get("counters", []):
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(c.committed or c.attempted or 0)
    for d in query.get("distributions", []):
        r = d.committed or d.attempted
        if r is not None and r.count:
            out[f"{d.key.metric.name}_mean"] = r.sum / r.count
    return out

"""The Beam evaluation: examples -> per-image confusion matrices -> one summed matrix per model.

Shared by the TFX executor and `deeplab evaluate`. Each worker loads the SavedModels once
(`DoFn.setup`; only the `logits` signature and its variables, see _load_signature_only) and calls
it through `models.inference` with the chosen test-time augmentation, `batch_size` images per
call: images the model sees at the same size (same size, or the same padded canvas with TTA
`pad_multiple`) are batched, so every image gets exactly its one-image answer (batch_size 1 is
the one-image path; the tests compare the integers). Padding different sizes into one canvas is
not done: DeepLab's image pooling and strided sampling grid would change the answers.

Per-image confusion matrices are summed by a CombineFn (associative, so
any sharding gives the same integers); the same combine keeps per-image figures (for the
reference-style average) and the best/worst images (for the gallery). Records that cannot be
read are skipped, counted by reason (Beam counters and the result) and named in the report.
"""

import heapq
import logging
import os
import pickle
import sys
import time
import uuid
from typing import Callable, Dict, Optional, Sequence

import apache_beam as beam
import numpy as np

from components.miou_evaluator import DEFAULT_BATCH_SIZE, DEFAULT_NUM_GALLERY, metrics
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
        "(pass the export directory written by models.export, or the Trainer's model artifact directory)"
    )


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
            splits = sorted(n.rstrip("/")[len("Split-") :] for n in tf.io.gfile.listdir(path) if n.startswith("Split-"))
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


def _functions_reachable(library, roots):
    """Names of the FunctionDefs of `library` that the functions `roots` call, transitively."""
    fdefs = {f.signature.name: f for f in library.function}
    keep, todo = set(), list(roots)

    def called(attr_values):
        for v in attr_values:
            if v.HasField("func"):
                yield v.func.name
            if v.HasField("list"):
                yield from (f.name for f in v.list.func)

    while todo:
        name = todo.pop()
        if name in keep or name not in fdefs:
            continue
        keep.add(name)
        for node in fdefs[name].node_def:
            if node.op in fdefs:
                todo.append(node.op)
            todo.extend(called(node.attr.values()))
        todo.extend(called(fdefs[name].attr.values()))
    return keep


def _load_signature_only(model_dir, signature_name=LOGITS_SIGNATURE):
    """(ConcreteFunction, object to keep alive with it): the SavedModel's `signature_name`
    signature, loading only it and the variables it captures (tf.saved_model's partial loading,
    with the function library pruned to what the signature calls).

    A DeepLab export holds four signatures and the checkpoint save/restore functions; turning every
    FunctionDef back into a graph is most of `tf.saved_model.load`'s time (demo export, shared
    2-core CPU: 1.2-1.9 s here against 5.5-5.8 s for the full load). The function run is the
    very FunctionDef the full load gives (the tests compare outputs bit for bit). Uses TensorFlow
    internals: callers fall back to the full load when this raises.
    """
    from tensorflow.python.checkpoint import checkpoint_options
    from tensorflow.python.framework import ops
    from tensorflow.python.saved_model import load as saved_model_load
    from tensorflow.python.saved_model import load_options, loader_impl

    proto = loader_impl.parse_saved_model(model_dir)
    if len(proto.meta_graphs) != 1 or not proto.meta_graphs[0].HasField("object_graph_def"):
        raise ValueError("not a TF2 object-based SavedModel")
    meta_graph = proto.meta_graphs[0]
    graph = meta_graph.object_graph_def
    paths, todo = {0: "root"}, [0]  # node id -> path from the root (what load filters name)
    while todo:
        node_id = todo.pop(0)
        for child in graph.nodes[node_id].children:
            if child.node_id not in paths:
                paths[child.node_id] = f"{paths[node_id]}.{child.local_name}"
                todo.append(child.node_id)
    by_path = {path: node_id for node_id, path in paths.items()}
    function_id = by_path.get(f"root.signatures.{signature_name}")
    if function_id is None or graph.nodes[function_id].WhichOneof("kind") != "bare_concrete_function":
        raise ValueError(f"no signature {signature_name!r}")
    name = graph.nodes[function_id].bare_concrete_function.concrete_function_name
    keep = _functions_reachable(meta_graph.graph_def.library, [name])
    library = meta_graph.graph_def.library
    functions = [f for f in library.function if f.signature.name in keep]
    del library.function[:]
    library.function.extend(functions)
    gradients = [g for g in library.gradient if g.function_name in keep]
    del library.gradient[:]
    library.gradient.extend(gradients)
    for other in [k for k in graph.concrete_functions if k not in keep]:
        del graph.concrete_functions[other]
    filters = [paths[function_id]] + [paths[i] for i in graph.concrete_functions[name].bound_inputs]
    with ops.init_scope():
        loader = saved_model_load.Loader(
            graph, proto, model_dir, checkpoint_options.CheckpointOptions(), load_options.LoadOptions(), filters
        )
    return loader.get(function_id), loader  # the loader holds the restored variables


def _load_logits_signature(model_dir):
    """(logits ConcreteFunction, object keeping its variables alive): partial load, else full load."""
    import tensorflow as tf

    try:
        return _load_signature_only(model_dir)
    except Exception as e:  # pylint: disable=broad-except  # any surprise: the standard, slower load
        log.info("partial load of %s failed (%s: %s); loading the whole SavedModel", model_dir, type(e).__name__, e)
    loaded = tf.saved_model.load(model_dir)
    if LOGITS_SIGNATURE not in loaded.signatures:
        raise ValueError(
            f"SavedModel {model_dir} has no {LOGITS_SIGNATURE!r} signature (it has "
            f"{sorted(loaded.signatures)}); export it with models.export.export_serving_model"
        )
    return loaded.signatures[LOGITS_SIGNATURE], loaded


class _Predictor:
    """uint8 images [H,W,3] -> int64 label maps [H,W] through one SavedModel's `logits` signature with
    test-time augmentation (models.inference). Loaded once per worker (EvaluateExampleFn.setup).

    `predict(image)` is the one-image path: one model call (per TTA variant) per image.
    `predict_batch(images, batch_size)` groups the images whose one-image path would feed the model
    tensors of the same size (models.inference.size_groups: same size, or same padded canvas) and
    runs each group as one batch: every image gets exactly its one-image answer, in fewer calls.
    The tf.functions take dynamic shapes ([None, None, None, 3]), so they trace once.
    """

    def __init__(self, model_dir, tta, num_classes):
        import tensorflow as tf

        from models.inference import pad_to_canvas, predict_logits

        self.model_dir = model_dir
        self._num_classes = int(num_classes)
        self._tta_kwargs = tta.kwargs()
        signature, self.loaded = _load_logits_signature(model_dir)  # self.loaded keeps the variables alive
        kwargs = self._tta_kwargs
        images_spec = tf.TensorSpec([None, None, None, 3], tf.float32)

        def logits_fn(images):
            return signature(images=images)["logits"]

        # autograph=False: predict_logits has no Python control flow on tensors (its loops are
        # tf.while_loop), and converting it costs seconds at the first call of every worker.
        @tf.function(input_signature=[images_spec], autograph=False)
        def labels_fn(images):
            logits = predict_logits(logits_fn, images, **kwargs)
            return tf.argmax(logits, axis=-1, output_type=tf.int64), tf.shape(logits)[-1]

        @tf.function(input_signature=[images_spec], autograph=False)
        def canvas_labels_fn(canvases):
            # Images already padded to their shared canvas: what predict_logits' whole mode at
            # scale 1 without flip does after padding (one call, crop back: the crop is below).
            logits = tf.cast(logits_fn(canvases), tf.float32)
            return tf.argmax(logits, axis=-1, output_type=tf.int64), tf.shape(logits)[-1]

        @tf.function(
            input_signature=[images_spec, tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)], autograph=False
        )
        def pad_fn(images, height, width):
            return pad_to_canvas(images, height, width)

        self._labels_fn, self._canvas_labels_fn, self._pad_fn = labels_fn, canvas_labels_fn, pad_fn
        self.calls = 0  # batches run (each is one model call per TTA variant)

    def _run(self, fn, images):
        labels, channels = fn(images)
        self.calls += 1
        if int(channels) != self._num_classes:
            raise ValueError(
                f"model {self.model_dir} outputs {int(channels)} classes but the evaluation expects "
                f"{self._num_classes}; pass the matching num_classes / class names"
            )
        return labels.numpy()

    def predict(self, image):
        """The one-image path: int64 labels [H, W] of one uint8 image [H, W, 3]."""
        import tensorflow as tf

        return self._run(self._labels_fn, tf.constant(image[np.newaxis], tf.float32))[0]

    __call__ = predict

    def predict_batch(self, images, batch_size):
        """Labels of each image (list, same order), at most `batch_size` images per model call;
        batch_size 1 is the one-image path."""
        import tensorflow as tf

        from models.inference import shared_canvas, size_groups

        if int(batch_size) <= 1:
            return [self.predict(image) for image in images]
        out = [None] * len(images)
        for _, members in size_groups([image.shape for image in images], batch_size, **self._tta_kwargs):
            if len(members) == 1:
                out[members[0]] = self.predict(images[members[0]])
                continue
            canvas = shared_canvas(*images[members[0]].shape[:2], **self._tta_kwargs)
            if canvas is None:  # all the same size
                labels = self._run(self._labels_fn, tf.constant(np.stack([images[i] for i in members]), tf.float32))
            else:
                ch, cw = (tf.constant(v, tf.int32) for v in canvas)
                padded = [self._pad_fn(tf.constant(images[i][np.newaxis], tf.float32), ch, cw) for i in members]
                labels = self._run(self._canvas_labels_fn, tf.concat(padded, axis=0))
            for j, i in enumerate(members):
                h, w = images[i].shape[:2]
                out[i] = labels[j, :h, :w]
        return out


def _load_predictor(model_dir, tta, num_classes):
    """A _Predictor: callable uint8 image [H,W,3] -> int64 labels [H,W], plus `predict_batch`."""
    return _Predictor(model_dir, tta, num_classes)


def _encode_png(array):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# Workers without a progress bar log a line every LOG_EVERY images.
LOG_EVERY = 25


class EvaluateExampleFn(beam.DoFn):
    """Serialized tf.train.Example -> {'filename', 'models': {name: (cm, summary)}, 'payload'} or
    {'skipped': (reason, name, detail)} for a record that cannot be read.

    With batch_size > 1, decoded images are buffered within a bundle and evaluated in batches of
    images the models see at the same size (see _Predictor.predict_batch): a group is run when it
    holds batch_size images, everything at the end of the bundle, or when more than
    max(32, 4 * batch_size) images are waiting. Every image gets its one-image (batch_size 1) answer, so
    the confusion matrices are the same integers.
    """

    def __init__(
        self,
        model_dirs,
        tta_json,
        num_classes=NUM_CLASSES,
        ignore_label=IGNORE_LABEL,
        batch_size=DEFAULT_BATCH_SIZE,
        expected_images=None,
    ):
        self._model_dirs = dict(model_dirs)
        self._expected_images = expected_images
        # A progress bar only where this DoFn runs in the launching process (in-process runner): worker
        # subprocesses would draw competing bars on the one terminal, and only log.
        self._launching_pid = os.getpid()
        self._tta_json = dict(tta_json)
        self._num_classes = int(num_classes)
        self._ignore_label = int(ignore_label)
        self._batch_size = max(1, int(batch_size or 1))
        # Bounds the decoded images held in memory while they wait for partners of the same size.
        self._max_buffered = max(32, 4 * self._batch_size)
        self._images = beam.metrics.Metrics.counter(NAMESPACE, "images_evaluated")
        self._labelled = beam.metrics.Metrics.counter(NAMESPACE, "labelled_pixels")
        self._ignored = beam.metrics.Metrics.counter(NAMESPACE, "ignored_pixels")
        self._invalid = beam.metrics.Metrics.counter(NAMESPACE, "invalid_predictions")
        self._calls = beam.metrics.Metrics.counter(NAMESPACE, "model_calls")  # of the current model
        self._millis = beam.metrics.Metrics.distribution(NAMESPACE, "inference_ms_per_image")

    def setup(self):
        from models.inference import TTAConfig

        tta = TTAConfig.from_json_dict(self._tta_json)
        self._tta_kwargs = tta.kwargs()
        self._predictors = {
            name: _load_predictor(path, tta, self._num_classes) for name, path in self._model_dirs.items()
        }
        self._seen = 0
        self._started = time.time()
        self._progress = None
        if os.getpid() == self._launching_pid:
            from tqdm import tqdm

            # disable=None: no bar when stdout is not a terminal (CI logs, files)
            self._progress = tqdm(
                total=self._expected_images,
                desc="evaluate",
                unit="img",
                file=sys.stdout,
                disable=None,
                mininterval=1.0,
                leave=False,
            )
        self._buffer = {}  # batch key -> [(serialized, image, label, filename)]
        self._buffered = 0
        log.info(
            "Loaded %s for evaluation (TTA: %s, batch size %d)",
            ", ".join(f"{n}={p}" for n, p in self._model_dirs.items()),
            tta.describe(),
            self._batch_size,
        )

    def start_bundle(self):
        self._buffer, self._buffered = {}, 0

    def teardown(self):
        if getattr(self, "_progress", None) is not None:
            self._progress.close()

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
        item = (serialized, image, label, filename)
        if self._batch_size == 1:
            yield from self._evaluate([item])
            return
        from models.inference import batch_key

        key = batch_key(image.shape[0], image.shape[1], **self._tta_kwargs)
        group = self._buffer.setdefault(key, [])
        group.append(item)
        self._buffered += 1
        if len(group) >= self._batch_size:
            self._buffered -= len(group)
            yield from self._evaluate(self._buffer.pop(key))
        elif self._buffered > self._max_buffered:
            yield from self._flush()

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindows

        for out in self._flush():
            yield GlobalWindows.windowed_value(out)

    def _flush(self):
        groups, self._buffer, self._buffered = list(self._buffer.values()), {}, 0
        for group in groups:
            yield from self._evaluate(group)

    def _evaluate(self, items):
        images = [image for _, image, _, _ in items]
        preds = {}
        for name, predictor in self._predictors.items():
            start, calls = time.time(), predictor.calls
            preds[name] = predictor.predict_batch(images, self._batch_size)
            per_image = int(1000 * (time.time() - start) / len(items))
            for _ in items:
                self._millis.update(per_image)
            if name == CURRENT:
                self._calls.inc(predictor.calls - calls)
        for k, item in enumerate(items):
            yield from self._record(item, {name: p[k] for name, p in preds.items()})

    def _record(self, item, preds):
        serialized, image, label, filename = item
        out = {"filename": filename, "models": {}}
        for name, pred in preds.items():
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
        if self._progress is not None:
            self._progress.update(1)
        if self._seen % LOG_EVERY == 0:
            log.info(
                "evaluated %d images on this worker (%.2f s/image)",
                self._seen,
                (time.time() - self._started) / self._seen,
            )
        yield out


def _sample_to_record(ref, num_classes, label_map=None):
    """VOC-root path: SampleRef -> serialized Example, or a skipped record (reason from BadSample).

    label_map: None (VOC ids) or a data.label_map.LabelMap's JSON dict: masks go through its encode_mask."""
    from data.tfrecord import BadSample, load_sample, to_example

    if label_map is not None:
        from data.label_map import LabelMap

        label_map = LabelMap.from_json_dict(label_map)
    try:
        return to_example(load_sample(ref, num_classes, label_map=label_map)).SerializeToString()
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

    def __init__(self, model_names, num_classes=NUM_CLASSES, num_gallery=DEFAULT_NUM_GALLERY):
        self._names = list(model_names)
        self._num_classes = int(num_classes)
        self._k = int(num_gallery)

    def create_accumulator(self):
        return {
            "cm": {n: np.zeros((self._num_classes, self._num_classes + 1), np.int64) for n in self._names},
            "images": {n: [] for n in self._names},
            "skipped": [],
            "best": [],  # min-heap of ((miou, filename), payload): keeps the k largest
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


def _expected_images(examples_pattern, sample_refs, max_images):
    """How many records the evaluation will see (the progress bar's total; a pass over the compressed records
    costs well under a second per thousand images next to a model call each)."""
    import tensorflow as tf

    if sample_refs is not None:
        total = len(sample_refs)
    else:
        files = tf.io.gfile.glob(examples_pattern)
        compression = "GZIP" if all(f.endswith(".gz") for f in files) and files else None
        total = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type=compression)) if files else 0
    return min(total, int(max_images)) if max_images else total


def run_beam_evaluation(
    model_dirs: Dict[str, str],
    tta,
    staging_dir: str,
    examples_pattern: Optional[str] = None,
    sample_refs: Optional[Sequence] = None,
    make_pipeline: Optional[Callable[[], beam.Pipeline]] = None,
    beam_args: Optional[Sequence[str]] = None,
    num_gallery: int = DEFAULT_NUM_GALLERY,
    max_images: Optional[int] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    label_map: Optional[dict] = None,
) -> dict:
    """Runs the evaluation pipeline and returns the combined raw result (see CombineEvaluationFn).

    model_dirs: {'current': dir, optionally 'baseline': dir} of SavedModels with a `logits` signature.
    tta: models.inference.TTAConfig.
    staging_dir: where the combined result is written by the pipeline (read back here).
    examples_pattern: TFRecord file pattern (GZIP detected from the .gz suffix), or
    sample_refs: a list of data.splits.SampleRef read straight from a dataset root.
    make_pipeline: () -> beam.Pipeline (the TFX executor passes its own); default: a pipeline
      from `beam_args` (DirectRunner unless they say otherwise).
    max_images: evaluate a random sample of N records (quick looks; the report says so).
    batch_size: at most this many images per model call (images the models see at the same size
      are batched; every image gets its one-image answer); 1: one image per call.
    label_map: None (VOC) or a data.label_map.LabelMap's JSON dict: the classes and the ignore label, and
      the encoding of `sample_refs` masks (encode_mask).
    """
    import tensorflow as tf

    if (examples_pattern is None) == (sample_refs is None):
        raise ValueError("give exactly one of examples_pattern and sample_refs")
    if CURRENT not in model_dirs:
        raise ValueError(f"model_dirs needs a {CURRENT!r} model, got {sorted(model_dirs)}")
    names = [CURRENT] + [n for n in model_dirs if n != CURRENT]
    if label_map is None:
        num_classes, ignore_label = NUM_CLASSES, IGNORE_LABEL
    else:
        from data.label_map import LabelMap

        classes = LabelMap.from_json_dict(label_map)
        num_classes, ignore_label = classes.num_classes, classes.ignore_label
    tf.io.gfile.makedirs(staging_dir)
    result_path = os.path.join(staging_dir, f"combined-{uuid.uuid4().hex}.pkl")
    if make_pipeline is None:

        def make_pipeline():
            from apache_beam.options.pipeline_options import PipelineOptions

            return beam.Pipeline(options=PipelineOptions(list(beam_args or [])))

    started = time.time()
    p = make_pipeline()
    if examples_pattern is not None:
        records = p | "ReadExamples" >> beam.io.ReadFromTFRecord(examples_pattern, coder=beam.coders.BytesCoder())
    else:
        records = (
            p
            | "Refs" >> beam.Create(list(sample_refs))
            | "Reshuffle" >> beam.Reshuffle()
            | "LoadSamples" >> beam.Map(_sample_to_record, num_classes, label_map)
        )
    if max_images:
        records = (
            records
            | "Limit" >> beam.combiners.Sample.FixedSizeGlobally(int(max_images))
            | "Unlist" >> beam.FlatMap(lambda xs: xs)
        )
    _ = (
        records
        | "Evaluate"
        >> beam.ParDo(
            EvaluateExampleFn(
                model_dirs,
                tta.to_json_dict(),
                num_classes,
                ignore_label,
                batch_size=batch_size,
                expected_images=_expected_images(examples_pattern, sample_refs, max_images),
            )
        )
        | "Combine" >> beam.CombineGlobally(CombineEvaluationFn(names, num_classes, num_gallery))
        | "Write" >> beam.Map(_write_pickle, result_path)
    )
    pipeline_result = p.run()
    pipeline_result.wait_until_finish()
    with tf.io.gfile.GFile(result_path, "rb") as f:
        raw = pickle.loads(f.read())
    tf.io.gfile.remove(result_path)
    raw["seconds"] = time.time() - started
    raw["model_dirs"] = dict(model_dirs)
    raw["counters"] = _counters(pipeline_result)
    raw["batch_size"] = int(batch_size or 1)
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

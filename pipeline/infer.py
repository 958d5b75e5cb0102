"""`deeplab infer`: segment a folder, glob or bucket of images with an exported model, as a Beam job.

    files -> ReadImage (bytes; header size check; full decode check) -> RunInference(SegmentationModelHandler,
    batches by BatchElements) -> WriteOutputs (label PNG, overlay) -> index.jsonl
                \\-> failed (unreadable / oversize, with the reason) -> failed.jsonl

Each good image gets `<output>/labels/<name>.png` (names: `output_names`): a palette PNG whose pixel values are
the class ids and whose palette is the model's label map (any viewer shows the colours,
`np.asarray(Image.open(...))` gives the ids); with --overlay also `<output>/overlays/<name>.png`. `index.jsonl` has
one line per image (image, labels file, height, width, class pixel shares by name, ms: its share of the batch's
model call) and `infer_report.json` the counts, the failed images with their reason, the batch sizes and the
seconds. More failed images than --max-failed-fraction (like the ingest's --max-rejected-fraction) fails the command
after the good ones are written.

The model handler: Beam 2.59's TensorFlow handler (`apache_beam.ml.inference.tensorflow_inference.
TFModelHandlerTensor`) cannot serve here: its module imports tensorflow_hub, which needs `pkg_resources`
(setuptools), absent from this stack; and it loads models with `tf.keras.models.load_model`, which gives no
callable for this project's SavedModel (a tf.Module with signatures, no Keras model) before calling `model(batch)`.
`SegmentationModelHandler` is a `ModelHandler` like it (same batching keywords for BatchElements) that loads the
export with `tf.saved_model.load` and calls the `serving_png` signature on the batch of encoded images: exactly
what TF Serving answers, in the compact PNG form (the signature groups a batch by image size, one model call per
size: images are never padded together).
"""

import collections
import io
import json
import logging
import os
import time

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from data import fileio, visualize
from data.label_map import LabelMap
from models.export_files import is_export, label_map_from_config, read_export_config
from pipeline import configs
from serving.server.image_limits import ImageHeaderError, check_image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SIGNATURE = "serving_png"
INDEX_FILE = "index.jsonl"
FAILED_FILE = "failed.jsonl"
REPORT_FILE = "infer_report.json"
LABELS_DIR = "labels"
OVERLAYS_DIR = "overlays"


class TooManyFailedError(RuntimeError):
    """More images failed than --max-failed-fraction allows (the report names them)."""


# ---------------------------------------------------------------------------------------------- inputs


def resolve_model_dir(path):
    """A SavedModel directory, or the newest numeric version under a TF Serving base folder (local or gs://)."""
    path = str(path).rstrip("/")
    found = fileio.latest_numbered(path, is_export)
    if found is None:
        raise FileNotFoundError(
            f"--model {path}: no saved_model.pb there nor in a numeric version folder under it "
            "(give an export such as serving/deeplab/<version>)"
        )
    return found


def list_images(source):
    """Sorted image paths of a folder (files with an image extension), a glob or a single file; local or gs://."""
    source = str(source)
    if tf.io.gfile.isdir(source):
        names = tf.io.gfile.listdir(source)
        paths = [
            source.rstrip("/") + "/" + n for n in names if not n.endswith("/") and n.lower().endswith(IMAGE_EXTENSIONS)
        ]
    else:
        paths = tf.io.gfile.glob(source)
    if not paths:
        raise FileNotFoundError(
            f"--input {source}: no images (a folder of {'/'.join(IMAGE_EXTENSIONS)} files, a glob or a file)"
        )
    return sorted(paths)


def output_names(paths):
    """{input path: unique PNG name} for the label and overlay files. Usually the base name with .png
    (a.jpg -> a.png, as VOC pairs JPEGImages/a.jpg with SegmentationClass/a.png); inputs from several folders
    (a glob such as 'photos/*/*.jpg') keep their folders below the common one (x/a.jpg -> x/a.png); inputs that
    would still share a name keep their extension (a.jpg -> a.jpg.png beside a.png -> a.png.png)."""
    parts = [str(p).split("/") for p in paths]
    common = 0
    if parts:
        folders = [p[:-1] for p in parts]
        while all(len(f) > common and f[common] == folders[0][common] for f in folders):
            common += 1
    relative = {str(p): "/".join(q[common:]) for p, q in zip(paths, parts)}
    names = {path: os.path.splitext(rel)[0] + ".png" for path, rel in relative.items()}
    while True:  # rel + ".png" is one-to-one, so moving the clashing names to it ends the clashes
        counts = collections.Counter(names.values())
        clashing = [p for p, name in names.items() if counts[name] > 1 and name != relative[p] + ".png"]
        if not clashing:
            return names
        for path in clashing:
            names[path] = relative[path] + ".png"


# ---------------------------------------------------------------------------------------------- Beam parts


def read_image(path, max_pixels=configs.INFER_MAX_IMAGE_PIXELS, max_side=configs.INFER_MAX_IMAGE_SIDE):
    """(bytes, None) for a good image, (None, (reason, detail)) for one that cannot be segmented:
    `unreadable` (missing file, not an image, truncated or corrupt data), `oversize` (header over the limits,
    checked before decoding)."""
    try:
        data = fileio.read_bytes(path)
    except (OSError, FileNotFoundError) as e:
        return None, ("unreadable", f"cannot read the file ({e})")
    try:
        check_image(data, max_pixels, max_side)
    except ImageHeaderError as e:
        reason = "oversize" if "over the server's limit" in str(e) else "unreadable"
        return None, (reason, str(e).replace("the server's limit", "the limit (--max-image-pixels/--max-image-side)"))
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # to the end: a header-only check misses truncated files
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
        return None, ("unreadable", f"cannot decode the image ({e})")
    return data, None


class SegmentationModelHandler(ModelHandler):
    """RunInference handler of a deeplab-tfx export: loads it with tf.saved_model.load and runs the `serving_png`
    signature on a batch of encoded images (see the module docstring for why not the stock handler). Each
    PredictionResult's inference is {"png": bytes, "height", "width", "batch_ms", "batch_size"}, or {"error":
    message} for an image the model's decoder refused (the batch is then re-run one image at a time, so one bad
    file does not fail its neighbours)."""

    def __init__(self, model_dir, batch_size=configs.INFER_BATCH_SIZE):
        super().__init__()
        self._model_uri = str(model_dir)
        self._batching_kwargs = {"min_batch_size": 1, "max_batch_size": int(batch_size)}

    def load_model(self):
        return tf.saved_model.load(self._model_uri).signatures[SIGNATURE]

    def run_inference(self, batch, model, inference_args=None):
        return _segment_batch(model, batch, self._model_uri)

    def get_num_bytes(self, batch):
        return sum(len(item) for item in batch)

    def batch_elements_kwargs(self):
        return self._batching_kwargs

    def update_model_path(self, model_path=None):
        self._model_uri = model_path or self._model_uri

    def get_metrics_namespace(self):
        return "deeplab_infer"


def _segment_batch(model, batch, model_id=None):
    def run(items):
        started = time.perf_counter()
        out = model(images=tf.constant(list(items), tf.string))
        ms = (time.perf_counter() - started) * 1000.0
        return [
            {
                "png": out["segmentation_png"][i].numpy(),
                "height": int(out["height"][i]),
                "width": int(out["width"][i]),
                "batch_ms": ms,
                "batch_size": len(items),
            }
            for i in range(len(items))
        ]

    try:
        answers = run(batch)
    except tf.errors.InvalidArgumentError:
        answers = []
        for item in batch:
            try:
                answers += run([item])
            except tf.errors.InvalidArgumentError as e:
                answers.append({"error": f"the model cannot decode the image ({e.message.splitlines()[0]})"})
    return [PredictionResult(example, answer, model_id) for example, answer in zip(batch, answers)]


class _Writer:
    """Writes one image's label PNG (palette of the label map) and overlay; returns its index.jsonl record."""

    def __init__(self, output_dir, label_map, overlay):
        self.output_dir = str(output_dir)
        self.label_map = label_map
        self.overlay = overlay
        self._palette = None

    def __call__(self, path, name, answer, data):
        label_map = self.label_map
        if self._palette is None:
            self._palette = label_map.colors().astype(np.uint8).reshape(-1).tolist()
        with Image.open(io.BytesIO(answer["png"])) as png:
            labels = np.asarray(png)
        picture = Image.fromarray(labels.astype(np.uint8), mode="P")
        picture.putpalette(self._palette)
        _write_png(picture, f"{self.output_dir}/{LABELS_DIR}/{name}")
        if self.overlay:
            with Image.open(io.BytesIO(data)) as image:
                rgb = np.asarray(image.convert("RGB"))
            blended = visualize.overlay(
                rgb, labels, palette=label_map.colors(), ignore_label=label_map.ignore_label, background=0
            )
            _write_png(Image.fromarray(blended), f"{self.output_dir}/{OVERLAYS_DIR}/{name}")
        counts = np.bincount(labels.ravel().astype(np.int64), minlength=label_map.num_classes)
        total = float(labels.size)
        shares = {
            (label_map.names[c] if c < label_map.num_classes else str(c)): round(counts[c] / total, 6)
            for c in np.flatnonzero(counts)
        }
        return {
            "image": path,
            "labels": f"{LABELS_DIR}/{name}",
            "height": answer["height"],
            "width": answer["width"],
            "class_shares": shares,
            "ms": round(answer["batch_ms"] / answer["batch_size"], 2),
            "batch_size": answer["batch_size"],
        }


def _write_png(picture, path):
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buf.getvalue())


def model_label_map(model_dir):
    """The export's label map (deeplab_export.json), VOC for exports older than label maps."""
    config = read_export_config(model_dir)
    found = label_map_from_config(config)
    if found is not None:
        return found
    num_classes = (config or {}).get("num_classes") or 21
    return LabelMap.voc() if int(num_classes) == 21 else LabelMap.synthetic(int(num_classes))


def build_pipeline(
    pipeline,
    paths,
    model_dir,
    output_dir,
    *,
    label_map,
    overlay,
    batch_size,
    max_pixels,
    max_side,
):
    """Adds the job to a beam.Pipeline; returns (index records, failed records) PCollections (dicts). The
    options are run_infer's, which passes them all."""
    handler = KeyedModelHandler(SegmentationModelHandler(model_dir, batch_size=batch_size))
    writer = _Writer(output_dir, label_map, overlay)

    def read(path_and_name):
        path, _ = path_and_name
        data, failure = read_image(path, max_pixels, max_side)
        if failure is None:
            yield beam.pvalue.TaggedOutput("good", (path_and_name, data))
        else:
            yield beam.pvalue.TaggedOutput("failed", {"image": path, "reason": failure[0], "detail": failure[1]})

    def write(keyed):
        (path, name), result = keyed
        answer = result.inference
        if "error" in answer:
            yield beam.pvalue.TaggedOutput("failed", {"image": path, "reason": "unreadable", "detail": answer["error"]})
        else:
            yield writer(path, name, answer, result.example)

    read_out = (
        pipeline
        | "Paths" >> beam.Create(sorted(output_names(paths).items()))  # (path, output name): names need all paths
        | "Spread" >> beam.Reshuffle()
        | "ReadImage" >> beam.FlatMap(read).with_outputs("good", "failed")
    )
    results = read_out.good | "RunInference" >> RunInference(handler)
    written = results | "WriteOutputs" >> beam.FlatMap(write).with_outputs("failed", main="index")
    failed = (read_out.failed, written.failed) | "Failed" >> beam.Flatten()
    return written.index, failed


def run_infer(
    model,
    source,
    output_dir,
    *,
    overlay=False,
    batch_size=configs.INFER_BATCH_SIZE,
    max_failed_fraction=configs.MAX_REJECTED_FRACTION,
    max_pixels=configs.INFER_MAX_IMAGE_PIXELS,
    max_side=configs.INFER_MAX_IMAGE_SIDE,
    beam_args=(),
):
    """Runs the job and writes index.jsonl, failed.jsonl and infer_report.json under output_dir; returns the
    report. Raises TooManyFailedError (after writing everything) when the failed fraction passes the limit."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if not 0.0 <= max_failed_fraction <= 1.0:
        raise ValueError(f"--max-failed-fraction must be within 0..1, got {max_failed_fraction}")
    model_dir = resolve_model_dir(model)
    paths = list_images(source)
    label_map = model_label_map(model_dir)
    output_dir = str(output_dir).rstrip("/")
    tf.io.gfile.makedirs(output_dir)
    scratch = f"{output_dir}/.beam-{os.getpid()}"
    started = time.time()
    log.info("Segmenting %d images with %s (batches of up to %d)", len(paths), model_dir, batch_size)
    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
        index, failed = build_pipeline(
            p,
            paths,
            model_dir,
            output_dir,
            label_map=label_map,
            overlay=overlay,
            batch_size=batch_size,
            max_pixels=max_pixels,
            max_side=max_side,
        )
        for name, records in (("index", index), ("failed", failed)):
            (
                records
                | f"{name}Json" >> beam.Map(lambda r: json.dumps(r, sort_keys=True))
                | f"{name}Write" >> beam.io.WriteToText(f"{scratch}/{name}", shard_name_template="-SSSSS")
            )
    seconds = time.time() - started
    records = {name: _read_shards(f"{scratch}/{name}-*") for name in ("index", "failed")}
    tf.io.gfile.rmtree(scratch)
    index = sorted(records["index"], key=lambda r: r["image"])
    failed = sorted(records["failed"], key=lambda r: r["image"])
    for name, rows in ((INDEX_FILE, index), (FAILED_FILE, failed)):
        with tf.io.gfile.GFile(f"{output_dir}/{name}", "w") as f:
            f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    fraction = len(failed) / len(paths)
    reasons = {}
    for r in failed:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    report = {
        "status": "ok" if fraction <= max_failed_fraction else "failed",
        "model": model_dir,
        "input": str(source),
        "images": len(paths),
        "segmented": len(index),
        "failed": len(failed),
        "failed_fraction": round(fraction, 6),
        "max_failed_fraction": max_failed_fraction,
        "failed_reasons": reasons,
        "failed_images": failed,
        "label_map": label_map.name,
        "batch_size": batch_size,
        "mean_batch": round(float(np.mean([r["batch_size"] for r in index])), 2) if index else None,
        "seconds": round(seconds, 2),
        "images_per_second": round(len(index) / seconds, 2) if seconds else None,
    }
    with tf.io.gfile.GFile(f"{output_dir}/{REPORT_FILE}", "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    if report["status"] != "ok":
        raise TooManyFailedError(
            f"{len(failed)} of {len(paths)} images could not be segmented ({fraction:.1%} > --max-failed-fraction "
            f"{max_failed_fraction}): {reasons}; see {output_dir}/{FAILED_FILE}"
        )
    return report


def _read_shards(pattern):
    rows = []
    for path in sorted(tf.io.gfile.glob(pattern)):
        with tf.io.gfile.GFile(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


# ---------------------------------------------------------------------------------------------- CLI

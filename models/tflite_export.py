"""TFLite export of DeepLab V3 with a parity gate against the SavedModel (issue 20).

`convert(model, input_size, quantize)` turns the tf_keras model into a TFLite flatbuffer:

  input   images  [1, S, S, 3] RGB, static size S (TFLite's kernels and delegates want static shapes):
                  float32 0..255 for `none` and `float16`; uint8 0..255 for `int8`, whose input tensor carries
                  the quantization (scale, zero_point) the interpreter reports (1.0, 0 when the representative
                  images span 0..255: the pixels go in unchanged)
  output  labels  [1, S, S] int32, the argmax class id of each pixel (TFLite's ARG_MAX gives int32; the
                  float32 logits would be 21x the bytes and need a softmax the app does not want)

Preprocessing (mean/std normalisation) is inside the network, as for the SavedModel; the app resizes its image
to S x S (bilinear) and reads the labels at that size. No test-time augmentation is baked in (the SavedModel's
`logits` signature is the reference of the parity gate for the same reason).

Quantization (`quantize`):
  none     float32 weights and activations
  float16  float16 weights, float32 activations (half the file; same answers up to rounding)
  int8     full-integer post-training quantization: int8 weights and activations, uint8 input, int32 labels;
           calibrated on a representative dataset (>= MIN_REPRESENTATIVE training images from the Examples,
           resized to S x S)

The label map is not in the flatbuffer: `write_tflite` puts `<name>.tflite` and `<name>.tflite.json` (the
sidecar: label map, inputs/outputs, quantization, source model, parity figures) side by side.

Parity gate (`parity_report`): the converted model and the SavedModel (its `logits` signature, argmax) see the
same validation images resized to S x S. float/float16 pass when >= FLOAT_MIN_AGREEMENT of the pixels get the same
label; int8 passes when its mIoU (against the ground truth at S x S, nearest-resized) is at most INT8_MAX_MIOU_DROP
below the SavedModel's. A model that fails is not pushed (components/tflite_pusher, `deeplab export --format
tflite` exits 1 and leaves no .tflite).

Only TensorFlow here: the .tflite answers with `tf.lite.Interpreter` alone.
"""

import json
import logging
import os
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from data import tfrecord
from models.confusion import iou_from_confusion
from models.input_pipeline import list_files
from models.tflite_gate import (  # noqa: F401  (re-exported: the options and the gate with the export)
    DEFAULT_INPUT_SIZE,
    DEFAULT_PARITY_IMAGES,
    FLOAT_MIN_AGREEMENT,
    INT8_MAX_MIOU_DROP,
    MIN_REPRESENTATIVE,
    QUANTIZE,
    check_input_size,
    check_quantize,
)

log = logging.getLogger(__name__)

TFLITE_NAME = "deeplab"  # <dir>/deeplab.tflite and <dir>/deeplab.tflite.json
SIDECAR_SUFFIX = ".json"
FORMAT_VERSION = 1


class ParityError(RuntimeError):
    """The converted model failed the parity gate; `report` holds the figures."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


# ---------------------------------------------------------------------------------------------- images


def resize_image(image, size):
    """uint8 [H,W,3] -> uint8 [S,S,3], bilinear: the one resize of both sides of the parity gate and of the
    representative dataset (rounded to uint8, so the int8 model's uint8 input sees the same pixels)."""
    resized = tf.image.resize(tf.cast(image, tf.float32)[tf.newaxis], (size, size), method="bilinear")[0]
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8).numpy()


def resize_labels(labels, size):
    """uint8 [H,W] ground truth -> [S,S], nearest neighbour (no invented classes at the borders)."""
    return tf.image.resize(labels[..., np.newaxis], (size, size), method="nearest")[..., 0].numpy()


def examples_images(examples, max_images=None):
    """(image uint8 [H,W,3], labels uint8 [H,W], filename) of ExampleGen records in file order; `examples`:
    a split directory, a glob or a list of them (models.input_pipeline.list_files)."""
    count = 0
    for path in list_files(examples):
        compression = "GZIP" if path.endswith(".gz") else ""
        for record in tf.data.TFRecordDataset(path, compression_type=compression):
            if max_images is not None and count >= max_images:
                return
            yield tfrecord.parse_example_np(record.numpy())
            count += 1


def representative_dataset(examples, input_size, count=MIN_REPRESENTATIVE):
    """The int8 calibration set: `count` images of the Examples at `input_size`, float32 [1,S,S,3] (a list, so
    that its length is checked before the converter runs). Fewer than `count` images is an error."""
    images = [resize_image(image, input_size) for image, _, _ in examples_images(examples, count)]
    if len(images) < count:
        raise ValueError(
            f"int8 calibration needs at least {count} training images; {examples} holds {len(images)} "
            "(use --quantize float16, or more training data)"
        )
    return [image[np.newaxis].astype(np.float32) for image in images]


# ---------------------------------------------------------------------------------------------- conversion


def _labels_function(model, input_size):
    """float32 [1,S,S,3] -> int32 [1,S,S] argmax labels, traced with static shapes."""

    @tf.function(input_signature=[tf.TensorSpec([1, input_size, input_size, 3], tf.float32, name="images")])
    def labels(images):
        logits = tf.cast(model(images, training=False), tf.float32)
        return {"labels": tf.argmax(logits, axis=-1, output_type=tf.int32)}

    return labels.get_concrete_function()


def convert(model, input_size=DEFAULT_INPUT_SIZE, quantize="none", representative_images=None):
    """The TFLite flatbuffer (bytes) of a float32 tf_keras DeepLab model (see the module docstring).

    representative_images: for int8, float32 [1,S,S,3] arrays 0..255 (`representative_dataset`)."""
    quantize = check_quantize(quantize)
    input_size = check_input_size(input_size)
    if model.dtype_policy.compute_dtype != "float32":
        raise ValueError(
            f"convert needs a float32 model; got compute dtype {model.dtype_policy.compute_dtype} "
            "(models.model_io.with_precision(model, 'float32', config) makes one)"
        )
    function = _labels_function(model, input_size)
    # The converter saves its trackable object first: the variables alone, not the Keras model (saving that
    # traces every layer for Keras' own SavedModel format, most of a conversion's time).
    holder = tf.Module()
    holder.weights = list(model.weights)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], holder)
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if not representative_images:
            raise ValueError("int8 quantization needs representative_images (training images at the input size)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image] for image in representative_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        # ARG_MAX's output is int32 whatever the activations are: nothing to set for the output.
    started = time.time()
    content = converter.convert()
    log.info(
        "Converted to TFLite (%s, %dx%d): %.1f MB in %.0f s",
        quantize,
        input_size,
        input_size,
        len(content) / 1e6,
        time.time() - started,
    )
    return content


class TfliteSegmenter:
    """A .tflite DeepLab (bytes or a path) in `tf.lite.Interpreter` (XNNPACK, `num_threads` threads: all cores
    by default). `labels(image)`: uint8 [S,S,3] -> int32 [S,S]."""

    def __init__(self, model, num_threads=None):
        num_threads = num_threads or os.cpu_count()
        if isinstance(model, (bytes, bytearray)):
            self.interpreter = tf.lite.Interpreter(model_content=bytes(model), num_threads=num_threads)
        else:
            self.interpreter = tf.lite.Interpreter(model_path=str(model), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self.input_size = int(self._input["shape"][1])

    def labels(self, image):
        image = np.asarray(image)
        if image.shape != (self.input_size, self.input_size, 3):
            raise ValueError(f"the TFLite model takes {self.input_size}x{self.input_size}x3 images; got {image.shape}")
        dtype = self._input["dtype"]
        if dtype == np.float32:
            value = image.astype(np.float32)
        else:  # uint8 input: quantize with the input tensor's own parameters
            scale, zero_point = self._input["quantization"]
            value = np.clip(np.round(image.astype(np.float32) / scale + zero_point), 0, 255).astype(dtype)
        self.interpreter.set_tensor(self._input["index"], value[np.newaxis])
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"])[0]

    def io_details(self):
        """The inputs/outputs as recorded in the sidecar JSON."""

        def describe(d):
            scale, zero_point = d["quantization"]
            out = {"name": d["name"], "shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
            if scale:
                out["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
            return out

        return {"inputs": [describe(self._input)], "outputs": [describe(self._output)]}


# ---------------------------------------------------------------------------------------------- parity gate


class SavedModelLabels:
    """The SavedModel's answer at a given size: its `logits` signature (no test-time augmentation, like the
    .tflite), argmax. Loaded with TensorFlow alone."""

    def __init__(self, saved_model_dir):
        self._logits = tf.saved_model.load(str(saved_model_dir)).signatures["logits"]

    def labels(self, image):
        logits = self._logits(images=tf.constant(np.asarray(image, np.float32)[np.newaxis]))["logits"]
        return tf.argmax(logits, axis=-1, output_type=tf.int32)[0].numpy()


def _confusion(num_classes, labels, predictions, ignore_label):
    valid = labels != ignore_label
    index = labels[valid].astype(np.int64) * num_classes + np.clip(predictions[valid], 0, num_classes - 1)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def parity_report(
    tflite_model,
    saved_model_dir,
    examples,
    quantize,
    *,
    num_classes,
    ignore_label=255,
    max_images=DEFAULT_PARITY_IMAGES,
    min_agreement=FLOAT_MIN_AGREEMENT,
    max_miou_drop=INT8_MAX_MIOU_DROP,
    num_threads=None,
):
    """Runs the .tflite and the SavedModel on the same validation images at the TFLite input size and returns
    the gate's figures: pixel agreement, both mIoUs (ground truth at that size), the rule applied and `passed`.

    float/float16: passed = agreement >= min_agreement; int8: passed = miou_tflite >= miou_saved_model -
    max_miou_drop. No images is an error (a gate that measured nothing must not pass)."""
    quantize = check_quantize(quantize)
    segmenter = TfliteSegmenter(tflite_model, num_threads=num_threads)
    reference = SavedModelLabels(saved_model_dir)
    size = segmenter.input_size
    equal = total = 0
    cm_saved = np.zeros((num_classes, num_classes), np.int64)
    cm_tflite = np.zeros((num_classes, num_classes), np.int64)
    per_image = []
    for image, labels, filename in examples_images(examples, max_images):
        image = resize_image(image, size)
        labels = resize_labels(labels, size)
        ours, theirs = segmenter.labels(image), reference.labels(image)
        same = int(np.sum(ours == theirs))
        equal += same
        total += ours.size
        cm_saved += _confusion(num_classes, labels, theirs, ignore_label)
        cm_tflite += _confusion(num_classes, labels, ours, ignore_label)
        per_image.append({"image": filename, "agreement": round(same / ours.size, 6)})
    if not total:
        raise ValueError(f"the parity gate found no validation images in {examples}")
    _, miou_saved = iou_from_confusion(cm_saved)
    _, miou_tflite = iou_from_confusion(cm_tflite)
    agreement = equal / total
    if quantize == "int8":
        rule = f"miou_tflite >= miou_saved_model - {max_miou_drop}"
        passed = miou_tflite is not None and miou_saved is not None and miou_tflite >= miou_saved - max_miou_drop
    else:
        rule = f"pixel_agreement >= {min_agreement}"
        passed = agreement >= min_agreement
    return {
        "quantize": quantize,
        "input_size": size,
        "images": len(per_image),
        "pixel_agreement": round(agreement, 6),
        "miou_saved_model": None if miou_saved is None else round(float(miou_saved), 6),
        "miou_tflite": None if miou_tflite is None else round(float(miou_tflite), 6),
        "rule": rule,
        "passed": bool(passed),
        "per_image": per_image,
        "reference": "SavedModel `logits` signature, argmax, same images at the same size",
    }


# ---------------------------------------------------------------------------------------------- files


def sidecar(content, *, label_map, quantize, source, parity=None, representative=None):
    """The JSON written beside the .tflite: label map, inputs/outputs, quantization, parity figures."""
    return {
        "format_version": FORMAT_VERSION,
        "quantize": quantize,
        "label_map": label_map.to_json_dict(),
        **TfliteSegmenter(content, num_threads=1).io_details(),
        "preprocessing": "resize the RGB image to the input size (bilinear); pixels 0..255, no normalisation "
        "(it is inside the model)",
        "source": str(source),
        "representative_images": representative,
        "parity": parity,
        "bytes": len(content),
    }


def write_tflite(directory, content, metadata, name=TFLITE_NAME):
    """Writes `<directory>/<name>.tflite` and its sidecar `<name>.tflite.json` (each through a temporary file
    renamed into place, so a reader never sees half a file); returns the .tflite path."""
    tf.io.gfile.makedirs(str(directory))
    path = os.path.join(str(directory), name + ".tflite")
    for target, data, mode in ((path, content, "wb"), (path + SIDECAR_SUFFIX, json.dumps(metadata, indent=2), "w")):
        staging = target + ".tmp"
        with tf.io.gfile.GFile(staging, mode) as f:
            f.write(data)
        tf.io.gfile.rename(staging, target, overwrite=True)
    return path


def export_tflite(
    saved_model_dir,
    output_dir,
    *,
    quantize: str = "none",
    input_size: int = DEFAULT_INPUT_SIZE,
    representative_examples: Optional[str] = None,
    parity_examples: Optional[str] = None,
    max_parity_images: int = DEFAULT_PARITY_IMAGES,
    min_agreement: float = FLOAT_MIN_AGREEMENT,
    max_miou_drop: float = INT8_MAX_MIOU_DROP,
    name: str = TFLITE_NAME,
):
    """Converts the export at `saved_model_dir`, runs the parity gate on `parity_examples` and writes the
    .tflite + sidecar to `output_dir` only when it passes; raises ParityError (with the figures) otherwise.

    Returns (path of the .tflite, sidecar dict)."""
    from models import model_io

    quantize = check_quantize(quantize)
    input_size = check_input_size(input_size)
    if parity_examples is None:
        raise ValueError("the parity gate needs validation Examples (parity_examples)")
    loaded = model_io.load_model(str(saved_model_dir), precision="float32")
    representative = None
    if quantize == "int8":
        if representative_examples is None:
            raise ValueError("int8 needs representative_examples: training Examples (>= 100 images)")
        representative = representative_dataset(representative_examples, input_size)
    content = convert(loaded.model, input_size, quantize, representative)
    label_map = loaded.label_map
    if label_map is None:
        from models.export import default_label_map

        label_map = default_label_map(loaded.config.num_classes)
    parity = parity_report(
        content,
        saved_model_dir,
        parity_examples,
        quantize,
        num_classes=label_map.num_classes,
        ignore_label=label_map.ignore_label,
        max_images=max_parity_images,
        min_agreement=min_agreement,
        max_miou_drop=max_miou_drop,
    )
    metadata = sidecar(
        content,
        label_map=label_map,
        quantize=quantize,
        source=saved_model_dir,
        parity=parity,
        representative=None
        if representative is None
        else {"examples": str(representative_examples), "images": len(representative)},
    )
    if not parity["passed"]:
        raise ParityError(
            f"the {quantize} TFLite model fails the parity gate ({parity['rule']}: pixel agreement "
            f"{parity['pixel_agreement']:.4f}, mIoU {parity['miou_tflite']} vs the SavedModel's "
            f"{parity['miou_saved_model']}); not written",
            metadata,
        )
    return write_tflite(output_dir, content, metadata, name=name), metadata

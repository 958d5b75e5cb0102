"""The DeepLab V3 fit loop shared by the TFX Trainer (models/trainer_module.py) and `deeplab train`.

train(hparams, train_files, eval_files, model_run_dir, serving_model_dir) does, in order:
  strategy (MultiWorkerMirroredStrategy from TF_CONFIG, MirroredStrategy on several GPUs) ->
  precision policy -> dataset statistics (models/transform.py: the pipeline's transform graph, or the same
  analyzers run in-process) -> class weights of the loss (hparams.class_weights; "auto" etc. from the class pixel
  counts), input normalization (hparams.normalization), class-balanced sampling (hparams.sampling) -> model
  (models.deeplab; with hparams.init_from, the weights of a trained model copied by models.finetune.warm_start) +
  SGD/Adam with the poly schedule -> Model.fit with
  BackupAndRestore (a killed run resumes at its last checkpointed step), TensorBoard (loss,
  learning rate, running mIoU, prediction overlays), best-mIoU checkpoint -> mIoU over every
  validation image at its own size -> model.keras + hparams.json + train_report.json in
  model_run_dir -> TF Serving SavedModel (models.export) in serving_model_dir.
"""

import json
import logging
import math
import os
import tempfile
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models import input_pipeline
from models.confusion import iou_from_confusion
from models.losses import CLASS_WEIGHT_METHODS, MaskedSparseCrossEntropy, class_weights_from_histogram
from models.metrics import StreamingMeanIoU
from models.model_io import build_model, precision_policy, save_model, with_precision, write_hparams
from models.precision import resolve_atrous_impl, resolve_precision

log = logging.getLogger(__name__)

REPORT_FILENAME = "train_report.json"


@keras.saving.register_keras_serializable(package="deeplab")
class PolyDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The paper's "poly" policy, lr = base * (1 - step / decay_steps) ** power, after a linear warm-up."""

    def __init__(self, base_learning_rate, decay_steps, power=0.9, end_learning_rate=0.0, warmup_steps=0):
        self.base_learning_rate = base_learning_rate
        self.decay_steps = decay_steps
        self.power = power
        self.end_learning_rate = end_learning_rate
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        progress = tf.minimum(step / float(max(self.decay_steps, 1)), 1.0)
        lr = (self.base_learning_rate - self.end_learning_rate) * (1.0 - progress) ** self.power
        lr += self.end_learning_rate
        if self.warmup_steps:
            lr *= tf.minimum((step + 1.0) / float(self.warmup_steps), 1.0)
        return lr

    def get_config(self):
        return dict(
            base_learning_rate=self.base_learning_rate,
            decay_steps=self.decay_steps,
            power=self.power,
            end_learning_rate=self.end_learning_rate,
            warmup_steps=self.warmup_steps,
        )


def build_optimizer(hparams, total_steps):
    """SGD with momentum (paper) or Adam (the reference repo used Adam 1e-5), on the poly schedule."""
    schedule = PolyDecay(
        hparams.learning_rate, total_steps, hparams.lr_power, hparams.end_learning_rate, hparams.warmup_steps
    )
    if hparams.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=hparams.momentum)
    return keras.optimizers.Adam(schedule)


def get_strategy(devices=None):
    """MultiWorkerMirroredStrategy when TF_CONFIG names several workers, MirroredStrategy over `devices`
    or several visible GPUs, else the default strategy."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    cluster = tf_config.get("cluster", {})
    if sum(len(cluster.get(k, [])) for k in ("chief", "worker")) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices:
        return tf.distribute.MirroredStrategy(devices=list(devices))
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """Whether this process writes the final model, export and reports (only one worker does)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def dataset_statistics(hparams, train_files, transform_graph=None, work_dir=None, label_map=None):
    """(statistics, tft_output, how): the training split's models.transform.DatasetStatistics, its transform graph
    (tft.TFTransformOutput) and where they came from. From `transform_graph` (the pipeline's Transform output)
    whenever it is given; without it, computed by the same preprocessing_fn in this process (tft_beam on the
    DirectRunner, the graph written to work_dir/transform_graph), but only when a setting needs them (class_weights
    a method, normalization "dataset", sampling "class_balanced"); else (None, None, "not needed")."""
    needs = isinstance(hparams.class_weights, str) or hparams.normalization == "dataset"
    needs = needs or hparams.sampling == "class_balanced"
    if not transform_graph and not needs:
        return None, None, "not needed"
    from data.label_map import LabelMap
    from models.transform import load_or_analyze

    ignore_label = LabelMap.resolve(label_map).ignore_label if label_map is not None else input_pipeline.IGNORE_LABEL
    work_dir = work_dir or tempfile.mkdtemp(prefix="deeplab_transform_")
    return load_or_analyze(transform_graph, train_files, work_dir, hparams.num_classes, ignore_label)


def resolve_class_weights(hparams, statistics=None):
    """(weights, how): the per-class loss weights hparams.class_weights asks for, as a list of floats (None when
    off), and a short description. A method name ("auto" = "median_frequency", "inverse_sqrt") computes them with
    models.losses.class_weights_from_histogram from the class pixel counts of `statistics` (dataset_statistics:
    the transform graph's analyzers; no pass over the records here)."""
    requested = hparams.class_weights
    if requested is None:
        return None, "off"
    if not isinstance(requested, str):
        return [float(w) for w in requested], "given"
    if statistics is None:
        raise ValueError(f"class_weights={requested!r} needs the dataset statistics (train.dataset_statistics)")
    counts = list(statistics.class_pixels)
    weights = class_weights_from_histogram(counts, requested, num_classes=hparams.num_classes)
    absent = [c for c, n in enumerate(counts) if n == 0]
    if absent:
        log.warning("class weights: class id(s) %s have no pixel in the training examples: weight 0", absent)
    how = (
        f"{requested}: {CLASS_WEIGHT_METHODS[requested]} over the class pixel counts of "
        f"{statistics.num_examples} training examples ({sum(counts)} labelled pixels) from {statistics.source}"
    )
    return weights, how


def resolve_normalization(hparams, statistics=None):
    """hparams with the model's input normalization set: normalization "dataset" puts the training pixels'
    per-channel mean and std (statistics) into the model config (models.layers.Preprocess, baked into exports)."""
    if hparams.normalization != "dataset":
        return hparams
    if statistics is None:
        raise ValueError("normalization='dataset' needs the dataset statistics (train.dataset_statistics)")
    return hparams.replace(input_mean=statistics.channel_mean, input_std=statistics.channel_std)


def transform_record(hparams, statistics):
    """What deeplab_export.json records of the dataset statistics training used (the "transform" entry)."""
    return {
        "transform_graph": statistics.source,
        "normalization": hparams.normalization,
        "sampling": hparams.sampling,
        "repeat_threshold": hparams.repeat_threshold if hparams.sampling == "class_balanced" else None,
        "statistics": statistics.to_json_dict(),
    }


def compile_model(model, hparams, total_steps, class_weights=None):
    """Compiles `model` for training. class_weights: the resolved per-class loss weights (resolve_class_weights);
    None takes hparams.class_weights when it is a list of numbers (a method name needs resolve_class_weights)."""
    if class_weights is None and hparams.class_weights is not None:
        if isinstance(hparams.class_weights, str):
            raise ValueError(
                f"class_weights={hparams.class_weights!r} is computed from the training examples: pass "
                "compile_model(..., class_weights=resolve_class_weights(hparams, dataset_statistics(...)[0])[0])"
            )
        class_weights = list(hparams.class_weights)
    model.compile(
        optimizer=build_optimizer(hparams, total_steps),
        loss=MaskedSparseCrossEntropy(class_weights=class_weights),
        metrics=[StreamingMeanIoU(hparams.num_classes, name="miou")],
        jit_compile=bool(hparams.xla),
    )
    return model


class LearningRateLogger(keras.callbacks.Callback):
    """Writes the learning rate every `every` steps to TensorBoard (Keras logs it only per epoch)."""

    def __init__(self, log_dir, every=50):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))
        self.every = every

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0:
            lr = self.model.optimizer.learning_rate  # a schedule, or the optimizer's current-lr variable
            value = lr(step) if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) else lr
            with self.writer.as_default():
                tf.summary.scalar("learning_rate_step", float(keras.backend.get_value(value)), step=step)


class PredictionImages(keras.callbacks.Callback):
    """After each epoch: image | ground truth | prediction overlays of a few validation images, to
    TensorBoard (run_dir/validation_images) and as a PNG in run_dir/predictions/."""

    def __init__(self, samples, run_dir):
        super().__init__()
        self.samples = samples  # [(image float32 [H,W,3], label uint8 [H,W])]
        self.run_dir = run_dir
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "validation_images"))

    def on_epoch_end(self, epoch, logs=None):
        from data.visualize import overlay, save_grid

        rows = []
        for image, label in self.samples:
            logits = self.model(image[None], training=False)
            prediction = np.argmax(logits[0].numpy(), axis=-1).astype(np.uint8)
            pixels = np.clip(image, 0, 255).astype(np.uint8)
            rows.append([pixels, overlay(pixels, label), overlay(pixels, prediction)])
        step = int(self.model.optimizer.iterations.numpy())
        with self.writer.as_default():
            for i, row in enumerate(rows):
                tf.summary.image(f"overlay_{i}/image_truth_prediction", np.concatenate(row, axis=1)[None], step=step)
        os.makedirs(os.path.join(self.run_dir, "predictions"), exist_ok=True)
        save_grid(
            rows,
            os.path.join(self.run_dir, "predictions", f"epoch_{epoch + 1:03d}.png"),
            titles=["image", "ground truth", f"prediction @ step {step}"],
        )


class InitialStep(keras.callbacks.Callback):
    """Records (and logs) the optimizer step training starts from: 0, or where BackupAndRestore resumed.
    Must come after BackupAndRestore in the callback list (it restores in its on_train_begin)."""

    def __init__(self):
        super().__init__()
        self.step = 0

    def on_train_begin(self, logs=None):
        self.step = int(self.model.optimizer.iterations.numpy())
        if self.step:
            log.info("resuming from step %d", self.step)


def _first_samples(eval_files, count):
    if not count:
        return []
    samples = []
    for image, label in input_pipeline.eval_dataset(eval_files).take(count):
        samples.append((image[0].numpy(), label[0, ..., 0].numpy()))
    return samples


def evaluate_miou(model, eval_files, num_classes, max_images=None):
    """Confusion matrix and mIoU of `model` over whole validation images (batch 1, each at its own size)."""
    metric = StreamingMeanIoU(num_classes)

    @tf.function(reduce_retracing=True)
    def step(image, label):
        metric.update_state(label, model(image, training=False))

    count = 0
    for image, label in input_pipeline.eval_dataset(eval_files):
        step(image, label)
        count += 1
        if max_images and count >= max_images:
            break
    confusion = metric.confusion.numpy()
    per_class, miou = iou_from_confusion(confusion)  # miou None when no class was seen
    return {
        "miou": miou,
        "per_class_iou": [None if np.isnan(v) else float(v) for v in per_class],
        "images": count,
        "pixels": int(confusion.sum()),
    }


def _epochs(hparams):
    """(epochs, steps per epoch) covering train_steps (rounded up to whole epochs)."""
    epochs = max(1, math.ceil(hparams.train_steps / max(1, hparams.steps_per_epoch)))
    return epochs, math.ceil(hparams.train_steps / epochs)


def train(
    hparams,
    train_files,
    eval_files,
    model_run_dir,
    serving_model_dir=None,
    strategy=None,
    callbacks=(),
    verbose=1,
    deterministic=False,
    backup_dir=None,
    serving_tta=None,
    label_map=None,
    transform_graph=None,
):
    """Train DeepLab V3 and write its artifacts; returns the report dict (also train_report.json).

    train_files / eval_files: glob patterns or directories of ExampleGen TFRecords (GZIP).
    model_run_dir: TensorBoard logs, best checkpoints, model.keras, hparams.json.
    serving_model_dir: where models.export writes the TF Serving SavedModel (None: no export).
    backup_dir: BackupAndRestore state (a killed run resumes from it); default model_run_dir/backup.
    serving_tta: models.inference.TTAConfig (or its dict) baked into the export; None = whole image, one scale.
    label_map: the dataset's data.label_map.LabelMap (or what LabelMap.resolve takes), recorded in the export;
        None: VOC's for 21 classes.
    transform_graph: the Transform component's output folder (fn_args.transform_graph_path): every dataset
        statistic (class weights, normalization "dataset", class_balanced sampling) is read from it. None: the same
        analyzers run in this process when a setting needs them (models/transform.py).
    """
    started = time.time()
    strategy = strategy or get_strategy()
    chief = is_chief(strategy)
    # Non-chief workers must write somewhere private (MultiWorkerMirroredStrategy convention).
    run_dir = (
        model_run_dir
        if chief
        else os.path.join(model_run_dir, "workers", f"worker_{strategy.cluster_resolver.task_id}")
    )
    tf.io.gfile.makedirs(run_dir)
    epochs, steps_per_epoch = _epochs(hparams)
    total_steps = epochs * steps_per_epoch
    policy, precision_reason = resolve_precision(hparams.precision)  # "auto" -> the policy native here
    atrous_impl, atrous_impl_reason = resolve_atrous_impl(hparams.atrous_impl)
    statistics, tft_output, statistics_how = dataset_statistics(
        hparams, train_files, transform_graph, os.path.join(run_dir, "transform"), label_map
    )
    if statistics is not None:
        log.info("Dataset statistics from %s", statistics_how)
    hparams = resolve_normalization(hparams, statistics)
    if hparams.normalization == "dataset":
        log.info(
            "Input normalization: dataset mean %s, std %s",
            [round(v, 3) for v in hparams.model.input_mean],
            [round(v, 3) for v in hparams.model.input_std],
        )
    class_weights, class_weights_how = resolve_class_weights(hparams, statistics)
    log.info(
        "Training %s (output_stride %d, crop %d, batch %d) for %d steps (%d epochs x %d) on %d replica(s), "
        "precision %s (%s), atrous convolutions %s (%s)%s",
        hparams.backbone,
        hparams.output_stride,
        hparams.crop_size,
        hparams.batch_size,
        total_steps,
        epochs,
        steps_per_epoch,
        strategy.num_replicas_in_sync,
        policy,
        precision_reason,
        atrous_impl,
        atrous_impl_reason,
        ", XLA" if hparams.xla else "",
    )
    if class_weights is not None:
        log.info("Class weights of the loss (%s): %s", class_weights_how, [round(w, 6) for w in class_weights])
    if chief:
        write_hparams(
            run_dir,
            hparams,
            precision_resolved=policy,
            precision_reason=precision_reason,
            class_weights_resolved=class_weights,
            atrous_impl_resolved=atrous_impl,
            atrous_impl_reason=atrous_impl_reason,
        )

    keras.utils.set_random_seed(hparams.seed)
    sampling = {}
    if hparams.sampling == "class_balanced":
        from models.transform import class_presence_fn

        sampling = dict(presence_fn=class_presence_fn(tft_output), class_image_fraction=statistics.class_image_fraction)
        log.info(
            "Class-balanced sampling (repeat threshold %g): images containing each class %s of %d",
            hparams.repeat_threshold,
            list(statistics.class_images),
            statistics.num_examples,
        )
    train_ds = input_pipeline.train_dataset(train_files, hparams, deterministic=deterministic, **sampling)
    replicas = strategy.num_replicas_in_sync
    if replicas > 1:
        # Keras splits every batch over the replicas and a replica left without an image fails, so
        # validation during fit uses padded batches of one image per replica and drops the remainder;
        # the final evaluation below still covers every image at its own size.
        val_ds = input_pipeline.eval_dataset(eval_files, batch_size=replicas, drop_remainder=True)
    else:
        val_ds = input_pipeline.eval_dataset(eval_files)
    if hparams.eval_steps:
        val_ds = val_ds.take(hparams.eval_steps)
    with precision_policy(policy), strategy.scope():  # metrics and optimizer too are made under the policy
        # no ImageNet load with init_from
        model = build_model(hparams.model, None, **{**hparams.build_options(), "atrous_impl": atrous_impl})
    init_report = None
    if hparams.init_from:
        # Before fit: BackupAndRestore restores a resumed run's checkpoint in on_train_begin, after this, so an
        # interrupted fine-tuning continues from its own last step, not from the source model again. Outside the
        # strategy scope: the source model is a plain local copy, read on every worker alike.
        from models.finetune import warm_start

        init_report = warm_start(model, hparams.init_from, log=log, config=hparams.model, label_map=label_map)
    with precision_policy(policy), strategy.scope():
        compile_model(model, hparams, total_steps, class_weights)

    initial_step = InitialStep()
    fit_callbacks = [
        keras.callbacks.BackupAndRestore(
            backup_dir or os.path.join(run_dir, "backup"), save_freq=hparams.checkpoint_every, delete_checkpoint=False
        ),
        initial_step,
        keras.callbacks.TensorBoard(run_dir, update_freq=max(1, min(50, steps_per_epoch))),
        LearningRateLogger(run_dir, every=max(1, min(50, steps_per_epoch))),
        keras.callbacks.ModelCheckpoint(
            os.path.join(run_dir, "checkpoints", "best_miou"),
            monitor="val_miou",
            mode="max",
            save_best_only=True,
            save_weights_only=True,
        ),
    ]
    if chief and hparams.log_images:
        fit_callbacks.append(PredictionImages(_first_samples(eval_files, hparams.log_images), run_dir))
    fit_callbacks.extend(callbacks)
    history = model.fit(
        train_ds,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=val_ds,
        callbacks=fit_callbacks,
        verbose=verbose,
    )
    fit_seconds = time.time() - started

    final = with_precision(model, "float32", hparams.model)  # saved and exported in float32
    evaluation = evaluate_miou(final, eval_files, hparams.num_classes)
    report = {
        "val_miou": evaluation["miou"],
        "val_per_class_iou": evaluation["per_class_iou"],
        "val_images": evaluation["images"],
        "steps": int(model.optimizer.iterations.numpy()),
        "initial_step": initial_step.step,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "train_seconds": round(fit_seconds, 1),
        "replicas": strategy.num_replicas_in_sync,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "hparams": hparams.to_dict(),
        "precision_resolved": policy,
        "precision_reason": precision_reason,
        "atrous_impl_resolved": atrous_impl,
        "atrous_impl_reason": atrous_impl_reason,
        "class_weights_resolved": class_weights,
        "dataset_statistics": None if statistics is None else statistics.to_json_dict(),
        "init_from": init_report,
        "model": None,
        "serving_model_dir": None,
    }
    log.info(
        "Validation mIoU over %d whole images: %s",
        evaluation["images"],
        "none (no labelled pixel)" if evaluation["miou"] is None else f"{evaluation['miou']:.4f}",
    )
    # Every worker saves and exports (saving a MultiWorkerMirrored model runs collective ops that
    # need all workers); non-chief workers write into their private run_dir, deleted afterwards.
    model_path = save_model(final, run_dir)
    export_dir = serving_model_dir if chief else os.path.join(run_dir, "serving_model")
    if serving_model_dir:
        from models.export import export_serving_model

        export_serving_model(
            final,
            export_dir,
            hparams=hparams,
            config=hparams.model,
            tta=serving_tta,
            label_map=label_map,
            extra_config=None if statistics is None else {"transform": transform_record(hparams, statistics)},
        )
    if chief:
        report["model"] = model_path
        report["serving_model_dir"] = serving_model_dir or None
        with tf.io.gfile.GFile(os.path.join(run_dir, REPORT_FILENAME), "w") as f:
            json.dump(report, f, indent=2)
    else:
        tf.io.gfile.rmtree(run_dir)
    return report

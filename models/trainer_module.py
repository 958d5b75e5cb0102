"""TFX Trainer module: `run_fn(fn_args)` trains DeepLab V3 on the ExampleGen splits.

Use with `tfx.components.Trainer(module_file=<this file>` or `run_fn="models.trainer_module.run_fn"`,
examples=example_gen.outputs["examples"], train_args=TrainArgs(num_steps=N), eval_args=EvalArgs(num_steps=M or None),
custom_config={"preset": "paper" | "demo" | ..., <any models.hparams.HParams field>: value,
               "serving_tta": <models.inference.TTAConfig dict or null>, "resume_root": <folder or gs://...>})`.

`serving_tta` is the test-time augmentation baked into the exported SavedModel (null: single-scale whole images).
`resume_root` makes a killed pipeline resume its training: TFX gives every Trainer execution a new `model_run`
folder, so the BackupAndRestore state lives instead under `resume_root/<key>/`, where the key hashes the
hyper-parameters and the example files. Re-running the same pipeline after a crash finds it and continues from
the last checkpointed step; a changed configuration (or new data) gets a new key and starts afresh. The state
is deleted once the model is exported.

Writes (TFX artifacts):
  model_run (fn_args.model_run_dir): TensorBoard logs (loss, learning rate, running mIoU,
    prediction overlays), checkpoints/best_miou, model.keras + hparams.json (re-exportable),
    train_report.json (with `initial_step`: 0, or the step a resumed run started from), predictions/*.png.
  model (fn_args.serving_model_dir): the TF Serving SavedModel from models.export.
"""

import hashlib
import json
import logging
import posixpath

from models import hparams as hparams_lib
from models import train as train_lib

log = logging.getLogger(__name__)

# custom_config keys that configure the Trainer run rather than the network and its training.
SERVING_TTA_KEY = "serving_tta"
RESUME_ROOT_KEY = "resume_root"
RESUME_CONFIG_FILENAME = "resume_config.json"


def split_custom_config(custom_config):
    """(hyper-parameter config, serving TTA or None, resume root or None) of a Trainer custom_config."""
    config = dict(custom_config or {})
    return config, config.pop(SERVING_TTA_KEY, None), config.pop(RESUME_ROOT_KEY, None)


def hparams_from_fn_args(fn_args):
    """HParams from custom_config, with the Trainer's train/eval steps (when set) taking precedence."""
    config, _, _ = split_custom_config(getattr(fn_args, "custom_config", None))
    return hparams_lib.from_custom_config(
        config, train_steps=getattr(fn_args, "train_steps", None), eval_steps=getattr(fn_args, "eval_steps", None)
    )


def resume_identity(hparams, train_files, eval_files, serving_tta=None):
    """What must be equal for a checkpoint to be continued: the hyper-parameters, the example files (a new
    ExampleGen artifact has new URIs) and the export settings."""
    return {
        "hparams": hparams.to_dict(),
        "train_files": sorted(train_files),
        "eval_files": sorted(eval_files),
        "serving_tta": serving_tta,
    }


def resume_dir_for(resume_root, identity):
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return posixpath.join(str(resume_root), key)


def _prepare_resume_dir(resume_root, identity):
    """Creates (or finds) the state folder of `identity` under resume_root and says what happens."""
    import tensorflow as tf

    state_dir = resume_dir_for(resume_root, identity)
    config_path = posixpath.join(state_dir, RESUME_CONFIG_FILENAME)
    others = [
        d.rstrip("/")
        for d in (tf.io.gfile.listdir(resume_root) if tf.io.gfile.isdir(resume_root) else [])
        if posixpath.join(str(resume_root), d.rstrip("/")) != state_dir
    ]
    if tf.io.gfile.exists(config_path):
        log.info("Found the training state of this configuration in %s: resuming from its last checkpoint", state_dir)
    elif others:
        log.warning(
            "The configuration or the data changed since the unfinished training(s) in %s (%s): "
            "starting afresh from step 0 in %s",
            resume_root,
            ", ".join(sorted(others)),
            state_dir,
        )
    else:
        log.info("No unfinished training of this configuration: starting from step 0 (state in %s)", state_dir)
    tf.io.gfile.makedirs(state_dir)
    with tf.io.gfile.GFile(config_path, "w") as f:
        json.dump(identity, f, indent=1, sort_keys=True)
    return state_dir


def run_fn(fn_args):
    """TFX Trainer entry point (GenericExecutor): train, save to model_run_dir, export to serving_model_dir."""
    import tensorflow as tf

    hparams = hparams_from_fn_args(fn_args)
    _, serving_tta, resume_root = split_custom_config(getattr(fn_args, "custom_config", None))
    log.info("DeepLab V3 hyper-parameters: %s", hparams.to_json())
    train_files, eval_files = list(fn_args.train_files), list(fn_args.eval_files)
    backup_dir = None
    if resume_root:
        backup_dir = _prepare_resume_dir(resume_root, resume_identity(hparams, train_files, eval_files, serving_tta))
    report = train_lib.train(
        hparams,
        train_files,
        eval_files,
        fn_args.model_run_dir,
        fn_args.serving_model_dir,
        backup_dir=backup_dir,
        serving_tta=serving_tta,
    )
    if backup_dir:
        # Finished and exported: a later run with the same settings is a TFX cache hit or a deliberate re-run,
        # neither of which should continue from this state.
        tf.io.gfile.rmtree(backup_dir)
    log.info(
        "Trainer done: validation mIoU %s over %d images, %d steps (started at step %d)",
        "none" if report["val_miou"] is None else "%.4f" % report["val_miou"],
        report["val_images"],
        report["steps"],
        report["initial_step"],
    )
    return report

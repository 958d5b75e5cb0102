"""TFX Trainer module: `run_fn(fn_args)` trains DeepLab V3 on the ExampleGen splits.

Use with `tfx.components.Trainer(module_file=<this file>` or `run_fn="models.trainer_module.run_fn"`,
examples=example_gen.outputs["examples"], transform_graph=transform.outputs["transform_graph"] (models/transform.py:
the dataset statistics; without it they are computed in-process when a setting needs them),
train_args=TrainArgs(num_steps=N), eval_args=EvalArgs(num_steps=M or None),
custom_config={"preset": "paper" | "demo" | ..., <any models.hparams.HParams field>: value,
               "serving_tta": <models.inference.TTAConfig dict or null>, "resume_root": <folder or gs://...>,
               "label_map": <data.label_map.LabelMap.to_json_dict() or null (VOC)>})`.

`label_map` names the dataset's classes: the network gets `label_map.num_classes` outputs (a num_classes set in
the hyper-parameters must agree), and the export carries the names and colours (its `label_map` signature and
deeplab_export.json). Null or absent: Pascal VOC's 21 classes, as before label maps.

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

from models import finetune
from models import hparams as hparams_lib
from models import train as train_lib

log = logging.getLogger(__name__)

# custom_config keys that configure the Trainer run rather than the network and its training.
SERVING_TTA_KEY = "serving_tta"
RESUME_ROOT_KEY = "resume_root"
LABEL_MAP_KEY = "label_map"  # data.label_map.LabelMap.to_json_dict(), or None: VOC
RESUME_CONFIG_FILENAME = "resume_config.json"


def split_custom_config(custom_config):
    """(hyper-parameter config, serving TTA or None, resume root or None) of a Trainer custom_config; the run keys
    (serving_tta, resume_root, label_map: see `label_map_from_custom_config`) are taken out of the first."""
    config = dict(custom_config or {})
    config.pop(LABEL_MAP_KEY, None)
    return config, config.pop(SERVING_TTA_KEY, None), config.pop(RESUME_ROOT_KEY, None)


def label_map_from_custom_config(custom_config):
    """The custom_config's label map as a data.label_map.LabelMap, or None (absent or null: VOC)."""
    from data.label_map import LabelMap

    value = (custom_config or {}).get(LABEL_MAP_KEY)
    if value is None:
        return None
    if isinstance(value, dict):
        return LabelMap.from_json_dict(value, source=f"Trainer custom_config[{LABEL_MAP_KEY!r}]")
    return LabelMap.resolve(value)


def _explicit_num_classes(config):
    """num_classes as the hyper-parameter config sets it (flat, under "model", or in a nested "hparams" dict or
    JSON string), or None when it does not."""
    found = None
    sections = [config]
    nested = config.get("hparams")
    if isinstance(nested, str):
        nested = json.loads(nested)
    if isinstance(nested, dict):
        sections.append(nested)
    for section in list(sections):
        model = section.get("model")
        if isinstance(model, dict):
            sections.append(model)
        elif model is not None and hasattr(model, "num_classes"):  # a ModelConfig
            sections.append({"num_classes": model.num_classes})
    for section in sections:
        if section.get("num_classes") is not None:
            found = int(section["num_classes"])
    return found


def hparams_from_custom_config(custom_config, train_steps=None, eval_steps=None):
    """HParams of a Trainer custom_config (run keys ignored). With a label map, the network's num_classes is the
    label map's number of classes; a different num_classes set in the hyper-parameters is a ValueError."""
    config, _, _ = split_custom_config(custom_config)
    label_map = label_map_from_custom_config(custom_config)
    if label_map is not None:
        explicit = _explicit_num_classes(config)
        if explicit is not None and explicit != label_map.num_classes:
            raise ValueError(
                f"Trainer custom_config: the hyper-parameters set num_classes={explicit} but the label map "
                f"{label_map.name!r} has {label_map.num_classes} classes ({', '.join(label_map.names[:5])}"
                f"{', ...' if label_map.num_classes > 5 else ''}); drop num_classes (the label map sets it) or "
                "use a label map with that many classes"
            )
        if explicit is None:
            if isinstance(config.get("model"), dict):
                config["model"] = {**config["model"], "num_classes": label_map.num_classes}
            else:
                config["num_classes"] = label_map.num_classes
    return hparams_lib.from_custom_config(config, train_steps=train_steps, eval_steps=eval_steps)


def hparams_from_fn_args(fn_args):
    """HParams from custom_config, with the Trainer's train/eval steps (when set) taking precedence."""
    return hparams_from_custom_config(
        getattr(fn_args, "custom_config", None),
        train_steps=getattr(fn_args, "train_steps", None),
        eval_steps=getattr(fn_args, "eval_steps", None),
    )


def resume_identity(hparams, train_files, eval_files, serving_tta=None, label_map=None):
    """What must be equal for a checkpoint to be continued: the hyper-parameters, the example files (a new
    ExampleGen artifact has new URIs), the export settings and the label map (a LabelMap or its JSON dict; None
    and VOC's leave the identity as it was before label maps, so such runs still resume)."""
    identity = {
        "hparams": hparams.to_dict(),
        "train_files": sorted(train_files),
        "eval_files": sorted(eval_files),
        "serving_tta": serving_tta,
    }
    if label_map is not None:
        from data.label_map import LabelMap

        label_map = LabelMap.resolve(label_map)
        if label_map != LabelMap.voc():
            identity[LABEL_MAP_KEY] = label_map.to_json_dict()
    return identity


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

    # The Trainer's base_model (create_pipeline(warm_start=True): the latest blessed model) seeds the weights.
    hparams = finetune.init_from_base_model(hparams_from_fn_args(fn_args), fn_args)
    custom_config = getattr(fn_args, "custom_config", None)
    _, serving_tta, resume_root = split_custom_config(custom_config)
    label_map = label_map_from_custom_config(custom_config)
    log.info("DeepLab V3 hyper-parameters: %s", hparams.to_json())
    if label_map is not None:
        log.info("Label map %r: %d classes (%s)", label_map.name, label_map.num_classes, ", ".join(label_map.names))
    train_files, eval_files = list(fn_args.train_files), list(fn_args.eval_files)
    backup_dir = None
    if resume_root:
        backup_dir = _prepare_resume_dir(
            resume_root, resume_identity(hparams, train_files, eval_files, serving_tta, label_map)
        )
    report = train_lib.train(
        hparams,
        train_files,
        eval_files,
        fn_args.model_run_dir,
        fn_args.serving_model_dir,
        backup_dir=backup_dir,
        serving_tta=serving_tta,
        label_map=label_map,  # recorded in the export; None: VOC's for 21 classes
        # The Transform component's graph (create_pipeline wires one): every dataset statistic comes from it.
        transform_graph=getattr(fn_args, "transform_graph_path", None) or getattr(fn_args, "transform_output", None),
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

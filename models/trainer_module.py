"""TFX Trainer module: `run_fn(fn_args)` trains DeepLab V3 on the ExampleGen splits.

Use with `tfx.components.Trainer(module_file=<this file>` or `run_fn="models.trainer_module.run_fn"`,
examples=example_gen.outputs["examples"], train_args=TrainArgs(num_steps=N), eval_args=EvalArgs(num_steps=M or None),
custom_config={"preset": "paper" | "demo" | ..., <any models.hparams.HParams field>: value})`.

Writes (TFX artifacts):
  model_run (fn_args.model_run_dir): TensorBoard logs (loss, learning rate, running mIoU,
    prediction overlays), backup/ (resume after a killed Trainer), checkpoints/best_miou,
    model.keras + hparams.json (re-exportable), train_report.json, predictions/*.png.
  model (fn_args.serving_model_dir): the TF Serving SavedModel from models.export.
"""
import logging

from models import hparams as hparams_lib
from models import train as train_lib

log = logging.getLogger(__name__)


def hparams_from_fn_args(fn_args):
    """HParams from custom_config, with the Trainer's train/eval steps (when set) taking precedence."""
    return hparams_lib.from_custom_config(getattr(fn_args, "custom_config", None) or {},
                                          train_steps=getattr(fn_args, "train_steps", None),
                                          eval_steps=getattr(fn_args, "eval_steps", None))


def run_fn(fn_args):
    """TFX Trainer entry point (GenericExecutor): train, save to model_run_dir, export to serving_model_dir."""
    hparams = hparams_from_fn_args(fn_args)
    log.info("DeepLab V3 hyper-parameters: %s", hparams.to_json())
    report = train_lib.train(hparams, list(fn_args.train_files), list(fn_args.eval_files), fn_args.model_run_dir,
                             fn_args.serving_model_dir)
    log.info("Trainer done: validation mIoU %.4f over %d images, %d steps", report["val_miou"],
             report["val_images"], report["steps"])
    return report

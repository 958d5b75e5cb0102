"""`deeplab train`: the Trainer's training loop outside TFX, on an ExampleGen output directory.

  deeplab train --examples <Examples uri with Split-train/ Split-val/> --output-dir OUT --preset demo \
                [--set train_steps=500 --crop-size 129 --label-map classes.json ...]

Writes OUT/model_run (logs, checkpoints, model.keras, hparams.json, train_report.json, pictures)
and OUT/serving_model (TF Serving SavedModel); prints the validation mIoU. Run again with the same
OUT to resume an interrupted run.
"""

import json
import os


def add_arguments(command, parser):
    from models import hparams as hparams_lib

    parser.add_argument(
        "--examples",
        required=True,
        help="ExampleGen output directory holding Split-<train split>/ and Split-<val split>/ (an Examples "
        "artifact, e.g. OUT/pipeline_root/VocExampleGen/examples/2), or the folder of such artifacts "
        "(OUT/pipeline_root/VocExampleGen/examples: the latest one is used)",
    )
    parser.add_argument("--output-dir", required=True, help="where model_run/ and serving_model/ are written")
    parser.add_argument("--train-split", default="train", help="split to train on (default %(default)s)")
    parser.add_argument("--val-split", default="val", help="split to validate on (default %(default)s)")
    parser.add_argument("--no-export", action="store_true", help="skip the TF Serving export")
    parser.add_argument(
        "--label-map",
        default=None,
        help="the dataset's classes: a built-in name (voc, cityscapes, ade20k) or a JSON/YAML label map file; "
        "sets num_classes, and the export carries the names and colours (default: voc)",
    )
    parser.add_argument(
        "--progress",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="Keras progress: 0 none, 1 a bar, 2 a line per epoch (default %(default)s)",
    )
    hparams_lib.add_flags(parser)


def _has_splits(path):
    return os.path.isdir(path) and any(n.startswith("Split-") for n in os.listdir(path))


def resolve_examples(examples, command="train"):
    """--examples as an Examples artifact folder: itself when it holds Split-* folders, else the latest numbered
    artifact under it; SystemExit listing the artifacts that exist when neither."""
    from data.fileio import latest_numbered, numbered_children

    found = latest_numbered(examples, _has_splits)
    if found:
        if found != examples:
            print(f"--examples {examples}: using the latest Examples artifact, {found}")
        return found
    parent = os.path.dirname(os.path.abspath(examples.rstrip("/")))
    existing = numbered_children(parent, _has_splits)
    hint = (
        f"the Examples artifacts there are {', '.join(existing)} (or pass {parent} for the latest)"
        if existing
        else "--examples must be an ExampleGen output (the Examples artifact folder with Split-*/ folders)"
    )
    what = "has no Split-* folders" if os.path.isdir(examples) else "does not exist"
    raise SystemExit(f"deeplab {command}: --examples {examples} {what}; {hint}")


def _holds_saved_model(path):
    """An export (saved_model.pb) or a Trainer Model artifact (Format-Serving/saved_model.pb)."""
    return any(os.path.isfile(os.path.join(path, *inner, "saved_model.pb")) for inner in ((), ("Format-Serving",)))


def latest_model(path, flag):
    """A model flag (`deeplab evaluate|export --model`) as given, or, for a folder of numbered versions or
    artifacts (runs/demo/serving/deeplab, .../Trainer/model), its latest one (said on stdout). Remote paths and
    paths that hold no model are returned unchanged: the loader names what it looked for."""
    from data.fileio import is_remote, latest_numbered

    if not path or is_remote(path):
        return path
    found = latest_numbered(path, _holds_saved_model)
    if found and found != path:
        print(f"{flag} {path}: using the latest, {found}")
    return found or path


def _split_dir(examples, split):
    path = os.path.join(examples, f"Split-{split}")
    if not os.path.isdir(path):
        found = sorted(n for n in os.listdir(examples) if n.startswith("Split-"))
        raise SystemExit(
            f"deeplab train: {path} does not exist (found {', '.join(found)}); "
            "choose the splits with --train-split / --val-split"
        )
    return path


def _label_map(args):
    """The --label-map as a LabelMap (None when not given); sets num_classes (a different --num-classes: exit)."""
    if args.label_map is None:
        return None
    from data.label_map import LabelMap, LabelMapError

    try:
        label_map = LabelMap.resolve(args.label_map)
    except (LabelMapError, FileNotFoundError) as e:
        raise SystemExit(f"deeplab train: --label-map: {e}") from None
    explicit = getattr(args, "hp_num_classes", None)
    if explicit is not None and int(explicit) != label_map.num_classes:
        raise SystemExit(
            f"deeplab train: --num-classes {explicit} disagrees with --label-map {args.label_map} "
            f"({label_map.num_classes} classes); drop --num-classes"
        )
    args.hp_num_classes = label_map.num_classes
    return label_map


def main(command, args):
    from models import hparams as hparams_lib

    label_map = _label_map(args)
    try:
        hparams = hparams_lib.from_flags(args)
    except ValueError as e:
        raise SystemExit(f"deeplab train: --preset/--set: {e}") from None
    examples = resolve_examples(args.examples)
    train_dir, val_dir = _split_dir(examples, args.train_split), _split_dir(examples, args.val_split)
    from models.train import train  # after the cheap checks: importing TensorFlow takes seconds

    serving_dir = os.path.join(args.output_dir, "serving_model")
    report = train(
        hparams,
        train_dir,
        val_dir,
        os.path.join(args.output_dir, "model_run"),
        None if args.no_export else serving_dir,
        verbose=args.progress,
        **({} if label_map is None else {"label_map": label_map}),
    )
    summary = {k: report[k] for k in ("val_miou", "val_images", "steps", "train_seconds", "model", "serving_model_dir")}
    print(json.dumps(summary, indent=2))
    miou = report["val_miou"]
    print("validation mIoU: " + ("none (no labelled pixel)" if miou is None else f"{miou:.4f}"))
    return 0

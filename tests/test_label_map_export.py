"""Label maps through training configuration and export (issue 11): the Trainer's custom_config["label_map"]
sets num_classes and the resume identity; the export records the label map in deeplab_export.json and serves it
from the `label_map` signature (plain TensorFlow, batch-shaped)."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from data.label_map import LabelMap
from models import trainer_module
from tests.helpers import FIVE_CLASSES, export_random_model


@pytest.fixture(scope="module")
def label_map_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("label_map") / "shapes.json"
    path.write_text(json.dumps(FIVE_CLASSES))
    return str(path)


@pytest.fixture(scope="module")
def exported(label_map_file, tmp_path_factory):
    """`deeplab export --init random --label-map shapes.json`: a tiny 5-class model (num_classes from the map)."""
    out = str(tmp_path_factory.mktemp("export") / "1")
    assert export_random_model(out, "--label-map", label_map_file) == 0
    return out


# ---------------------------------------------------------------------------------------------
# export


def test_export_records_the_label_map(exported):
    from models import export_files

    config = export_files.read_export_config(exported)
    assert config["num_classes"] == 5
    assert config["model_config"]["num_classes"] == 5
    assert config["label_map"] == LabelMap.from_json_dict(FIVE_CLASSES).to_json_dict()
    assert "label_map" in config["signatures"]
    assert export_files.read_label_map(exported) == LabelMap.from_json_dict(FIVE_CLASSES)
    assert any(
        line.startswith("label_map: index int32 [?] -> class_colors int32 [?,5,3], class_names string [?,5], ")
        for line in export_files.describe_signatures(exported)
    )


def test_label_map_signature_answers_with_plain_tensorflow(exported, tmp_path):
    """A TF Serving client's view: nothing of this project is importable, only TensorFlow loads the graph."""
    script = (
        "import json, sys\n"
        "import tensorflow as tf\n"
        "sig = tf.saved_model.load(sys.argv[1]).signatures['label_map']\n"
        "out = sig(index=tf.constant([0, 0], tf.int32))\n"
        "print(json.dumps({'names': [[n.decode() for n in row] for row in out['class_names'].numpy().tolist()],\n"
        "                  'colors': out['class_colors'].numpy().tolist(),\n"
        "                  'dtypes': {k: v.dtype.name for k, v in out.items()},\n"
        "                  'ignore': out['ignore_label'].numpy().tolist(),\n"
        "                  'project': sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "                                    ('data', 'models', 'serving', 'pipeline'))}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    run = subprocess.run(
        [sys.executable, "-c", script, exported], cwd=str(tmp_path), env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    names = [c["name"] for c in FIVE_CLASSES["classes"]]
    colors = [c["color"] for c in FIVE_CLASSES["classes"]]
    assert out["names"] == [names, names]
    assert out["colors"] == [colors, colors]
    assert out["ignore"] == [255, 255]
    assert out["dtypes"] == {"class_names": "string", "class_colors": "int32", "ignore_label": "int32"}
    assert out["project"] == []


def test_reexport_keeps_the_label_map_and_a_conflicting_one_is_refused(exported, label_map_file, tmp_path, capsys):
    import runner
    from models import export_files, model_io

    # load_model's LoadedModel.label_map: the export's; None for exports from before label maps (VOC).
    config = export_files.read_export_config(exported)
    assert model_io.LoadedModel(None, None, {}, config).label_map == LabelMap.from_json_dict(FIVE_CLASSES)
    older = {k: v for k, v in config.items() if k != "label_map"}
    assert model_io.LoadedModel(None, None, {}, older).label_map is None
    again = str(tmp_path / "2")
    assert runner.main(["export", "--model", exported, "--output", again, "--no-warmup"]) == 0
    assert export_files.read_label_map(again) == LabelMap.from_json_dict(FIVE_CLASSES)
    # A label map of another class count than the network: refused before anything is built.
    bad = str(tmp_path / "3")
    assert export_random_model(bad, "--num-classes", "7", "--label-map", label_map_file) == 2
    assert "num_classes 7 disagrees with --label-map" in capsys.readouterr().err
    assert runner.main(["export", "--model", exported, "--output", bad, "--label-map", "voc", "--no-warmup"]) == 2
    assert "has 21 classes but the model has 5" in capsys.readouterr().err


def test_default_label_map_of_an_export_without_one():
    from models.export import default_label_map

    assert default_label_map(21) == LabelMap.voc()
    assert default_label_map(5) == LabelMap.synthetic(5)
    assert LabelMap.resolve(None) == LabelMap.voc()


# ---------------------------------------------------------------------------------------------
# Trainer custom_config and resume identity


def test_custom_config_label_map_sets_num_classes():
    config = {"preset": "demo", "serving_tta": None, "resume_root": "/tmp/x", "label_map": FIVE_CLASSES}
    hparams = trainer_module.hparams_from_custom_config(config, train_steps=3)
    assert hparams.num_classes == 5 and hparams.train_steps == 3
    assert trainer_module.label_map_from_custom_config(config) == LabelMap.from_json_dict(FIVE_CLASSES)
    # The run keys never reach the hyper-parameters.
    assert "label_map" not in trainer_module.split_custom_config(config)[0]
    # The same number given explicitly (flat, nested under "model" or under "hparams") is fine.
    assert trainer_module.hparams_from_custom_config({**config, "num_classes": 5}).num_classes == 5
    assert trainer_module.hparams_from_custom_config({**config, "model": {"num_classes": 5}}).num_classes == 5
    # Without a label map (absent or null): VOC, as before.
    assert trainer_module.hparams_from_custom_config({"preset": "demo"}).num_classes == 21
    assert trainer_module.hparams_from_custom_config({"preset": "demo", "label_map": None}).num_classes == 21
    assert trainer_module.label_map_from_custom_config({"preset": "demo"}) is None


@pytest.mark.parametrize(
    "extra",
    [{"num_classes": 21}, {"model": {"num_classes": 3}}, {"hparams": json.dumps({"num_classes": 8})}],
    ids=["flat", "model", "hparams-json"],
)
def test_custom_config_num_classes_conflicting_with_the_label_map_is_refused(extra):
    explicit = 21 if "num_classes" in extra else 3 if "model" in extra else 8
    with pytest.raises(ValueError, match=f"num_classes={explicit} but the label map 'five' has 5 classes"):
        trainer_module.hparams_from_custom_config({"preset": "demo", "label_map": FIVE_CLASSES, **extra})


def test_resume_identity_changes_with_the_label_map():
    config = {"preset": "demo", "label_map": FIVE_CLASSES}
    hparams = trainer_module.hparams_from_custom_config(config)
    files = (["/ex/1/Split-train/*"], ["/ex/1/Split-val/*"])
    shapes = trainer_module.resume_identity(hparams, *files, None, LabelMap.from_json_dict(FIVE_CLASSES))
    renamed = dict(FIVE_CLASSES, classes=[dict(c, name=c["name"] + "_x") for c in FIVE_CLASSES["classes"]])
    other = trainer_module.resume_identity(hparams, *files, None, renamed)
    assert trainer_module.resume_dir_for("/r", shapes) != trainer_module.resume_dir_for("/r", other)
    assert trainer_module.resume_dir_for("/r", shapes) == trainer_module.resume_dir_for(
        "/r", trainer_module.resume_identity(hparams, *files, None, FIVE_CLASSES)
    )
    # None and VOC's own map keep the identity of runs from before label maps (they still resume).
    voc_hparams = trainer_module.hparams_from_custom_config({"preset": "demo"})
    before = trainer_module.resume_identity(voc_hparams, *files)
    assert trainer_module.resume_identity(voc_hparams, *files, None, None) == before
    assert trainer_module.resume_identity(voc_hparams, *files, None, LabelMap.voc()) == before
    assert "label_map" not in before


def test_deeplab_train_label_map_flag(label_map_file):
    from models import cli as train_cli
    from models import hparams as hparams_lib

    parser = argparse.ArgumentParser()
    train_cli.add_arguments("train", parser)
    args = parser.parse_args(
        ["--examples", "x", "--output-dir", "y", "--preset", "demo", "--label-map", label_map_file]
    )
    assert train_cli._label_map(args) == LabelMap.from_json_dict(FIVE_CLASSES)
    assert hparams_lib.from_flags(args).num_classes == 5
    args = parser.parse_args(
        ["--examples", "x", "--output-dir", "y", "--label-map", "cityscapes", "--num-classes", "21"]
    )
    with pytest.raises(SystemExit, match="--num-classes 21 disagrees with --label-map cityscapes"):
        train_cli._label_map(args)
    args = parser.parse_args(["--examples", "x", "--output-dir", "y"])
    assert train_cli._label_map(args) is None and hparams_lib.from_flags(args).num_classes == 21

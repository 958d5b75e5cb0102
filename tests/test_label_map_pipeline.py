"""Label maps through the pipeline: ingest (VocExampleGen), label statistics, evaluation and create_pipeline.

Small synthetic inputs: a 5-class VOC-layout dataset (data.synthetic.generate_dataset), hand-made masks and a
5-class colour model (tests/test_eval_support.py).
"""

import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from components.voc_example_gen import component as example_gen_component
from components.voc_example_gen import executor as example_gen_executor
from data import synthetic, tfrecord
from data.label_map import LabelMap
from data.splits import SampleRef
from tests.helpers import tiny_generic_dataset

FIVE = LabelMap.synthetic(5)


def label_map_json(label_map):
    return json.dumps(label_map.to_json_dict(), sort_keys=True)


def run_example_gen(out_dir, voc_root, label_map=None, max_rejected_fraction=1.0, layout=None, data_root=None):
    """Runs VocExampleGen's executor as TFX would; returns (Examples artifact, report dict)."""
    from tfx.dsl.components.base import base_beam_executor
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    artifact = standard_artifacts.Examples()
    artifact.uri = str(out_dir)
    exec_properties = {
        "input_config": proto_utils.proto_to_json(example_gen_component.make_input_config(None, None, layout)),
        "output_config": proto_utils.proto_to_json(example_gen_pb2.Output()),
        "voc_root": str(voc_root) if voc_root else None,
        "sbd_root": None,
        "max_rejected_fraction": max_rejected_fraction,
        "num_shards": 0,
        "label_map": label_map,
        "layout": layout,
        "data_root": str(data_root) if data_root else None,
    }
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=[], tmp_dir=str(out_dir))
    example_gen_executor.Executor(context).Do({}, {"examples": [artifact]}, exec_properties)
    report = json.load(open(os.path.join(out_dir, example_gen_executor.REPORT_FILE)))
    return artifact, report


def read_labels(artifact_uri, split):
    import glob

    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(artifact_uri, f"Split-{split}", "data_tfrecord-*.gz")))
    assert files
    out = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        _, label, filename = tfrecord.parse_example_np(record.numpy())
        out[filename] = label
    return out


def _save_ids_png(array, path):
    Image.fromarray(np.asarray(array, np.uint8), mode="L").save(path)


@pytest.fixture(scope="module")
def five_root(tmp_path_factory):
    return synthetic.generate_dataset(
        tmp_path_factory.mktemp("five"), label_map=FIVE, layout="voc", num_train=4, num_val=2, min_size=32, max_size=40
    )


@pytest.fixture(scope="module")
def five_ingested(tmp_path_factory, five_root):
    out = tmp_path_factory.mktemp("five_out")
    return run_example_gen(out, five_root, label_map=label_map_json(FIVE))


def test_ingest_five_classes_and_label_stats_name_them(five_root, five_ingested, tmp_path):
    artifact, report = five_ingested
    assert report["label_map"]["name"] == FIVE.name
    for split, count in (("train", 4), ("val", 2)):
        assert report["splits"][split]["examples"] == count and report["splits"][split]["rejected"] == 0
        labels = read_labels(artifact.uri, split)
        assert len(labels) == count
        for image_id, label in labels.items():
            assert set(np.unique(label).tolist()) <= {0, 1, 2, 3, 4, 255}
            source = np.asarray(Image.open(os.path.join(five_root, "SegmentationClass", f"{image_id}.png")))
            np.testing.assert_array_equal(label, source)

    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts

    from components.label_stats import executor as stats_executor
    from components.label_stats.component import LabelStatistics

    examples = standard_artifacts.Examples()
    examples.uri, examples.split_names = artifact.uri, artifact.split_names
    output = LabelStatistics()
    output.uri = str(tmp_path / "stats")
    os.makedirs(output.uri)
    stats_executor.Executor(base_beam_executor.BaseBeamExecutor.Context()).Do(
        {"examples": [examples]},
        {"label_statistics": [output]},
        {"exclude_splits": "[]", "fail_on_anomaly": 1, "label_map": label_map_json(FIVE)},
    )
    stats = json.load(open(os.path.join(output.uri, stats_executor.STATS_FILE)))
    assert stats["num_classes"] == 5 and stats["class_names"] == list(FIVE.names)
    assert stats["anomalies"] == []
    for split in ("train", "val"):
        assert list(stats["splits"][split]["class_pixels"]) == list(FIVE.names)
        assert stats["splits"][split]["out_of_range_pixels"] == {}
    assert os.path.getsize(os.path.join(output.uri, stats_executor.PLOT_FILE)) > 0


def test_value_outside_the_label_map_is_rejected_counted_and_named(five_root, tmp_path):
    root = str(tmp_path / "VOC2012")
    shutil.copytree(five_root, root)
    bad_id = open(os.path.join(root, "ImageSets/Segmentation/train.txt")).read().split()[1]
    mask_path = os.path.join(root, "SegmentationClass", f"{bad_id}.png")
    mask = np.array(Image.open(mask_path))
    mask[:2, :2] = 7  # a VOC class id, but not one of the 5 classes
    _save_ids_png(mask, mask_path)

    _, report = run_example_gen(tmp_path / "out", root, label_map=label_map_json(FIVE))
    train = report["splits"]["train"]
    assert train["examples"] == 3 and train["rejected"] == 1
    assert train["rejects_by_reason"] == {"label_out_of_range": 1}
    (reject,) = train["rejects"]
    assert reject["id"] == bad_id and reject["path"] == mask_path
    assert "[7]" in reject["detail"] and FIVE.name in reject["detail"]
    # The exception's message (what the log and the reject report say) names the value and the file.
    with pytest.raises(tfrecord.BadSample) as e:
        tfrecord.read_mask(mask_path, label_map=FIVE)
    assert mask_path in str(e.value) and "[7]" in str(e.value) and e.value.reason == "label_out_of_range"
    # Without a label map (VOC), 7 is a class id: the mask is read as before.
    assert tfrecord.read_mask(mask_path)[0, 0] == 7


def test_rgb_palette_masks_and_id_remap_convert_through_the_label_map(five_root, tmp_path):
    image_id = open(os.path.join(five_root, "ImageSets/Segmentation/train.txt")).read().split()[0]
    image_path = os.path.join(five_root, "JPEGImages", f"{image_id}.jpg")
    ids = np.asarray(Image.open(os.path.join(five_root, "SegmentationClass", f"{image_id}.png")))
    rgb_path = str(tmp_path / "rgb.png")
    Image.fromarray(FIVE.colors()[ids], mode="RGB").save(rgb_path)
    ref = SampleRef(image_id, "test", image_path, rgb_path)

    sample = tfrecord.load_sample(ref, label_map=FIVE)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(sample.mask_png))), ids)
    # VOC (no label map) keeps rejecting colour masks exactly as before.
    with pytest.raises(tfrecord.BadSample) as e:
        tfrecord.load_sample(ref)
    assert e.value.reason == "rgb_mask"
    # A colour outside the palette is named, with the file.
    rgb = FIVE.colors()[ids].copy()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb, mode="RGB").save(rgb_path)
    with pytest.raises(tfrecord.BadSample) as e:
        tfrecord.load_sample(ref, label_map=FIVE)
    assert e.value.reason == "label_out_of_range" and "[1, 2, 3]" in str(e.value) and rgb_path in str(e.value)

    # id_remap: source ids 10, 20 -> train ids 1, 0; anything else -> ignore.
    remapped = LabelMap(names=("bg", "thing"), id_remap={10: 1, 20: 0}, name="remapped")
    raw = np.where(ids == 0, 20, 10).astype(np.uint8)
    raw[0, :3] = 99
    remap_path = str(tmp_path / "remap.png")
    _save_ids_png(raw, remap_path)
    sample = tfrecord.load_sample(SampleRef(image_id, "test", image_path, remap_path), label_map=remapped)
    expected = np.where(ids == 0, 0, 1).astype(np.uint8)
    expected[0, :3] = 255
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(sample.mask_png))), expected)


def test_evaluator_writes_per_class_iou_under_the_label_map_names(tmp_path):
    import tensorflow as tf

    from components.miou_evaluator import beam_eval, report
    from components.miou_evaluator.evaluate import evaluate
    from tests.test_eval_support import FAR, save_colour_model, serialized_example

    colours = np.array([(0, 0, 0), (230, 40, 40), (40, 230, 40), (40, 40, 230)], np.int16)
    split_dir = tmp_path / "examples" / "Split-val"
    os.makedirs(split_dir)
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(split_dir / "data_tfrecord-00000-of-00001.gz"), options="GZIP") as writer:
        for i in range(3):
            label = np.zeros((24, 28), np.uint8)
            label[4:14, 5:15] = 1 + i % 3
            label[16:22, 18:26] = 1 + (i + 1) % 3
            image = np.clip(colours[label] + rng.integers(-20, 21, size=label.shape + (3,)), 0, 255).astype(np.uint8)
            label[0, :] = 255
            writer.write(serialized_example(image, label, f"img_{i}"))
    table = np.array([*colours.tolist(), FAR], np.float32)  # class 4 is never predicted nor present
    model = save_colour_model(tmp_path / "model", table)
    names = ["sky", "road", "car", "tree", "person"]
    custom = LabelMap(names=names, name="five")

    out = tmp_path / "report"
    result = evaluate(
        model,
        str(out),
        examples_pattern=beam_eval.resolve_examples(tmp_path / "examples", "val"),
        label_map=custom,
        num_gallery=1,
        tensorboard=False,
    )
    assert result["class_names"] == names
    written = json.load(open(out / report.EVALUATION_JSON))
    assert written["class_names"] == names and written["label_map"]["name"] == "five"
    assert [row["name"] for row in written["per_class"]] == names
    ious = {row["name"]: row["iou"] for row in written["per_class"]}
    assert min(ious["sky"], ious["road"], ious["car"], ious["tree"]) > 0.9
    assert ious["person"] is None and written["absent_classes"] == ["person"]  # never in labels nor predictions
    assert "person" in open(out / report.INDEX_HTML).read()
    assert os.path.getsize(out / report.GALLERY_PNG["best"]) > 0


def test_create_pipeline_passes_one_label_map_json_everywhere(tmp_path):
    from pipeline.pipeline import create_pipeline, trainer_custom_config

    path = FIVE.save(str(tmp_path / "five.json"))
    pipeline = create_pipeline(
        pipeline_root=str(tmp_path / "root"), voc_root=str(tmp_path), label_map=path, train_config={"preset": "demo"}
    )
    by_id = {c.id: c for c in pipeline.components}
    expected = label_map_json(LabelMap.load(path))
    for name in ("VocExampleGen", "LabelStatsGen", "MiouEvaluator"):
        assert by_id[name].exec_properties["label_map"] == expected, name
    custom_config = by_id["Trainer"].exec_properties["custom_config"]
    custom_config = json.loads(custom_config) if isinstance(custom_config, str) else custom_config
    assert custom_config["label_map"] == json.loads(expected)
    assert custom_config["label_map"]["classes"][4]["name"] == "class_4"

    # The default (VOC) adds nothing: no label_map anywhere, the Trainer's custom_config as before.
    pipeline = create_pipeline(pipeline_root=str(tmp_path / "root"), voc_root=str(tmp_path))
    by_id = {c.id: c for c in pipeline.components}
    for name in ("VocExampleGen", "LabelStatsGen", "MiouEvaluator"):
        assert by_id[name].exec_properties.get("label_map") is None, name
    assert "label_map" not in trainer_custom_config(None, None, str(tmp_path))
    # A built-in name resolves to the same JSON as its LabelMap.
    assert trainer_custom_config(None, None, str(tmp_path), label_map="cityscapes")["label_map"] == (
        LabelMap.cityscapes().to_json_dict()
    )


def test_cli_label_map_flag_reaches_the_pipeline_kwargs(tmp_path):
    import argparse

    from pipeline import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments("ingest", parser)
    base = ["--output-dir", str(tmp_path / "out"), "--voc-root", str(tmp_path)]
    args = parser.parse_args([*base, "--label-map", "cityscapes"])
    assert cli.options_from_args(args, with_model=False).pipeline_kwargs()["label_map"] == "cityscapes"
    args = parser.parse_args(base)
    assert cli.options_from_args(args, with_model=False).pipeline_kwargs()["label_map"] is None
    args = parser.parse_args([*base, "--label-map", str(tmp_path / "missing.json")])
    with pytest.raises(SystemExit, match="--label-map"):
        cli.options_from_args(args, with_model=False)


def test_generic_layout_with_rgb_masks_and_its_own_label_map(tmp_path):
    root = tiny_generic_dataset(tmp_path / "generic", FIVE, num_train=3, seed=0, max_size=40)
    assert os.path.exists(os.path.join(root, "label_map.json"))
    # No label_map property: the dataset's label_map.json decodes the RGB masks.
    artifact, report = run_example_gen(tmp_path / "out", None, layout="generic", data_root=root)
    assert report["layout"] == "generic" and report["label_map"]["name"] == FIVE.name
    for split, count in (("train", 3), ("val", 2)):
        assert report["splits"][split]["examples"] == count and report["splits"][split]["rejected"] == 0
        for image_id, label in read_labels(artifact.uri, split).items():
            rgb = np.asarray(Image.open(os.path.join(root, "masks", f"{image_id}.png")).convert("RGB"))
            np.testing.assert_array_equal(label, FIVE.encode_mask(rgb))
            assert set(np.unique(label).tolist()) <= {0, 1, 2, 3, 4, 255}

    from pipeline import cli
    from pipeline.pipeline import create_pipeline

    pipeline = create_pipeline(pipeline_root=str(tmp_path / "root"), voc_root=None, layout="generic", data_root=root)
    by_id = {c.id: c for c in pipeline.components}
    gen = by_id["VocExampleGen"].exec_properties
    assert gen["layout"] == "generic" and gen["data_root"] == root
    assert gen["label_map"] == label_map_json(FIVE) == by_id["LabelStatsGen"].exec_properties["label_map"]
    assert '"pattern": "train"' in gen["input_config"] and '"pattern": "val"' in gen["input_config"]

    import argparse

    parser = argparse.ArgumentParser()
    cli.add_arguments("ingest", parser)
    args = parser.parse_args(["--output-dir", str(tmp_path / "o"), "--layout", "generic", "--data-root", root])
    kwargs = cli.options_from_args(args, with_model=False).pipeline_kwargs()
    assert kwargs["layout"] == "generic" and kwargs["data_root"] == root
    assert kwargs["split_recipes"] == {"train": "train", "val": "val"}
    with pytest.raises(SystemExit, match="--data-root"):
        cli.options_from_args(parser.parse_args(["--output-dir", "o", "--layout", "generic"]), with_model=False)


@pytest.mark.parametrize("layout", ["cityscapes", "ade20k"])
def test_cityscapes_and_ade20k_layouts_ingest_with_their_built_in_label_maps(tmp_path, layout):
    from tests.test_data_readers_own import ade_tree, cityscapes_tree  # noqa: F401  (fixture bodies)

    make = {"cityscapes": cityscapes_tree, "ade20k": ade_tree}[layout].__wrapped__
    root = str(make(tmp_path))
    builtin = LabelMap.builtin(layout)
    artifact, report = run_example_gen(tmp_path / "out", None, layout=layout, data_root=root)
    assert report["layout"] == layout and report["label_map"] == builtin.to_json_dict()
    assert report["splits"]["train"]["examples"] == 2 and report["splits"]["val"]["examples"] == 1
    reader = {"cityscapes": "data.cityscapes", "ade20k": "data.ade20k"}[layout]
    from tfx.utils import proto_utils

    from data.layouts import open_dataset

    dataset = open_dataset(layout, root)
    assert dataset.__module__ == reader
    for split in ("train", "val"):
        for image_id, label in read_labels(artifact.uri, split).items():
            # The ingest's masks are the reader's train ids (Cityscapes labelIds -> trainIds, ADE20K k -> k-1).
            np.testing.assert_array_equal(label, dataset.load_mask(image_id))
    with pytest.raises(ValueError, match="has no split 'test'"):
        example_gen_executor.check_inputs(
            {
                "layout": layout,
                "data_root": root,
                "input_config": proto_utils.proto_to_json(example_gen_component.make_input_config({"train": "test"})),
            }
        )


def test_run_flags_check_class_weights_against_the_label_maps_class_count(tmp_path):
    import argparse

    from pipeline import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments("run", parser)
    base = ["--output-dir", str(tmp_path / "o"), "--layout", "cityscapes", "--data-root", str(tmp_path)]
    weights = ",".join(["1"] * 19)
    options = cli.options_from_args(parser.parse_args([*base, "--set", f"class_weights={weights}"]), with_model=True)
    assert len(options.train_config["class_weights"].split(",")) == 19  # 19 Cityscapes train ids: accepted
    with pytest.raises(SystemExit, match="num_classes is 19"):
        cli.options_from_args(parser.parse_args([*base, "--set", "class_weights=1,2,3"]), with_model=True)

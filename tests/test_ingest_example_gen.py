"""VocExampleGen executor: round trips, bad inputs skipped and counted, failure rules, reference import."""

import glob
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from components.voc_example_gen import component, executor
from data import synthetic, tfrecord

# No Beam args: the in-process DirectRunner, and TFX skips building its ephemeral sdist (~4 s per executor),
# which it does whenever Beam args are given. These tests check what is written, not how fast.
BEAM_ARGS = []


def run_example_gen(
    out_dir, voc_root=None, sbd_root=None, split_recipes=None, reference_tfrecords=None, max_rejected_fraction=0.05
):
    """Runs the executor as TFX would; returns (Examples artifact, report dict or None)."""
    from tfx.dsl.components.base import base_beam_executor
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from pipeline.pipeline import _no_tfx_sdist_for_the_direct_runner

    artifact = standard_artifacts.Examples()
    artifact.uri = str(out_dir)
    exec_properties = {
        "input_config": proto_utils.proto_to_json(component.make_input_config(split_recipes, reference_tfrecords)),
        "output_config": proto_utils.proto_to_json(example_gen_pb2.Output()),
        "voc_root": str(voc_root) if voc_root else None,
        "sbd_root": str(sbd_root) if sbd_root else None,
        "max_rejected_fraction": max_rejected_fraction,
        "num_shards": 0,
    }
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=list(BEAM_ARGS), tmp_dir=str(out_dir))
    with _no_tfx_sdist_for_the_direct_runner(BEAM_ARGS):
        executor.Executor(context).Do({}, {"examples": [artifact]}, exec_properties)
    return artifact, read_report(out_dir)


def read_report(out_dir):
    path = os.path.join(out_dir, executor.REPORT_FILE)
    return json.load(open(path)) if os.path.exists(path) else None


def read_split(artifact_uri, split):
    """{filename: (image, label, raw Example)} of one output split, read back with TensorFlow."""
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(artifact_uri, f"Split-{split}", "data_tfrecord-*.gz")))
    assert files, f"no TFRecords in {artifact_uri}/Split-{split}"
    out = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        image, label, filename = tfrecord.parse_example_np(record.numpy())
        out[filename] = (image, label, tf.train.Example.FromString(record.numpy()))
    return out


def feature_bytes(example, key):
    return example.features.feature[key].bytes_list.value[0]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return synthetic.generate_voc_dataset(
        tmp_path_factory.mktemp("synth"), num_train=6, num_val=3, seed=3, min_size=32, max_size=48
    )


@pytest.fixture(scope="module")
def dirty_root(tmp_path_factory, synth_root):
    """The synthetic tree with three bad train samples: a truncated JPEG, a missing mask, an RGB mask."""
    root = str(tmp_path_factory.mktemp("dirty") / "VOC2012")
    shutil.copytree(synth_root, root)
    ids = open(os.path.join(root, "ImageSets/Segmentation/train.txt")).read().split()
    jpeg = os.path.join(root, "JPEGImages", f"{ids[0]}.jpg")
    data = open(jpeg, "rb").read()
    open(jpeg, "wb").write(data[: len(data) // 2])
    os.remove(os.path.join(root, "SegmentationClass", f"{ids[1]}.png"))
    mask_path = os.path.join(root, "SegmentationClass", f"{ids[2]}.png")
    Image.open(mask_path).convert("RGB").save(mask_path)
    return root, ids


def test_round_trip_synthetic(tmp_path, synth_root):
    artifact, report = run_example_gen(tmp_path / "out", voc_root=synth_root)

    assert artifact.split_names == '["train", "val"]'
    assert artifact.get_string_custom_property("payload_format") == "FORMAT_TF_EXAMPLE"
    assert artifact.get_string_custom_property("file_format") == "tfrecords_gzip"
    for split, count in (("train", 6), ("val", 3)):
        assert report["splits"][split]["examples"] == count
        assert report["splits"][split]["rejected"] == 0
        records = read_split(artifact.uri, split)
        ids = open(os.path.join(synth_root, f"ImageSets/Segmentation/{split}.txt")).read().split()
        assert sorted(records) == sorted(ids)
        for image_id, (image, label, example) in records.items():
            # JPEG bytes are copied unchanged; the mask PNG decodes to the palette indices of the source.
            source_jpeg = open(os.path.join(synth_root, "JPEGImages", f"{image_id}.jpg"), "rb").read()
            assert feature_bytes(example, tfrecord.IMAGE_ENCODED) == source_jpeg
            assert feature_bytes(example, tfrecord.IMAGE_FORMAT) == b"jpeg"
            np.testing.assert_array_equal(image, np.asarray(Image.open(io.BytesIO(source_jpeg)).convert("RGB")))
            source_mask = np.asarray(Image.open(os.path.join(synth_root, "SegmentationClass", f"{image_id}.png")))
            np.testing.assert_array_equal(label, source_mask)
            assert 255 in label  # the boundary bands survive


def test_real_voc_sample_round_trip(tmp_path, voc_sample_root):
    artifact, report = run_example_gen(tmp_path / "out", voc_root=voc_sample_root)
    assert (report["splits"]["train"]["examples"], report["splits"]["val"]["examples"]) == (3, 16)
    records = read_split(artifact.uri, "val")
    for image_id, (image, label, example) in records.items():
        source_jpeg = (voc_sample_root / "JPEGImages" / f"{image_id}.jpg").read_bytes()
        assert feature_bytes(example, tfrecord.IMAGE_ENCODED) == source_jpeg
        source_mask = Image.open(voc_sample_root / "SegmentationClass" / f"{image_id}.png")
        assert source_mask.mode == "P"
        np.testing.assert_array_equal(label, np.asarray(source_mask))
        assert image.shape[:2] == label.shape


def test_bad_samples_are_skipped_and_counted(tmp_path, dirty_root):
    root, ids = dirty_root
    artifact, report = run_example_gen(tmp_path / "out", voc_root=root, max_rejected_fraction=0.5)

    train = report["splits"]["train"]
    assert train["examples"] == 3 and train["rejected"] == 3
    assert train["rejects_by_reason"] == {"corrupt_image": 1, "missing_mask": 1, "rgb_mask": 1}
    by_id = {r["id"]: r for r in train["rejects"]}
    assert by_id[ids[0]]["reason"] == "corrupt_image" and by_id[ids[0]]["path"].endswith(f"{ids[0]}.jpg")
    assert by_id[ids[1]]["reason"] == "missing_mask" and by_id[ids[1]]["path"].endswith(f"{ids[1]}.png")
    assert by_id[ids[2]]["reason"] == "rgb_mask"
    assert sorted(read_split(artifact.uri, "train")) == sorted(ids[3:])
    assert report["splits"]["val"]["rejected"] == 0


def test_threads_write_the_same_records_and_report_as_one_process(tmp_path, dirty_root, monkeypatch):
    """The ingest's default on the DirectRunner (configs.INGEST_BEAM_PIPELINE_ARGS, two threads) against the
    in-process runner: the same records, rejects and counts."""
    from pipeline import configs

    root, _ = dirty_root
    threads = configs.INGEST_BEAM_PIPELINE_ARGS + ["--direct_num_workers=2"]
    reports, records = [], []
    for name, beam_args in (("one", BEAM_ARGS), ("threads", threads)):
        monkeypatch.setattr(f"{__name__}.BEAM_ARGS", beam_args)  # run_example_gen's Beam arguments
        artifact, report = run_example_gen(tmp_path / name, voc_root=root, max_rejected_fraction=0.5)
        reports.append({split: {k: v for k, v in s.items() if k != "rejects"} for split, s in report["splits"].items()})
        reports[-1]["train_rejects"] = sorted((r["id"], r["reason"]) for r in report["splits"]["train"]["rejects"])
        records.append({split: read_split(artifact.uri, split) for split in ("train", "val")})
    assert reports[0] == reports[1]
    for split in ("train", "val"):
        one, threaded = records[0][split], records[1][split]
        assert sorted(one) == sorted(threaded)
        assert all(one[k][2] == threaded[k][2] for k in one)  # the same tf.train.Example


def test_too_many_rejects_fail_after_writing_the_report(tmp_path, dirty_root):
    root, _ = dirty_root
    out = tmp_path / "component" / "examples" / "7"
    with pytest.raises(
        executor.IngestError,
        match=r"split 'train' rejected 3 of 6 samples.*max_rejected_fraction"
        r".*rejects report: .*failed_runs/7/example_gen_report.json",
    ) as e:
        run_example_gen(out, voc_root=root, max_rejected_fraction=0.05)
    # The report is kept outside the output folder, which the orchestrator deletes after a failure.
    kept = tmp_path / "component" / "failed_runs" / "7" / executor.REPORT_FILE
    assert json.load(open(kept))["splits"]["train"]["rejects_by_reason"]["missing_mask"] == 1
    # ... and travels with the exception as attributes, for callers such as `deeplab ingest`.
    assert isinstance(e.value, executor.RejectsError)
    assert e.value.report_path == str(kept)
    assert e.value.splits == json.load(open(kept))["splits"]


def test_rejects_error_keeps_its_attributes_through_pickle_and_the_cli_finds_it_in_a_chain():
    import pickle

    from pipeline.cli import _ingest_rejects

    splits = {"train": {"rejected": 3}}
    error = pickle.loads(pickle.dumps(executor.RejectsError("too many (rejects report: /r.json)", "/r.json", splits)))
    assert (str(error), error.report_path, error.splits) == ("too many (rejects report: /r.json)", "/r.json", splits)
    try:
        try:
            raise error
        except executor.RejectsError as inner:
            raise RuntimeError("component failed") from inner
    except RuntimeError as outer:
        assert _ingest_rejects(outer) == splits
    assert _ingest_rejects(ValueError("no ExampleGen involved")) is None


def test_empty_split_fails(tmp_path, dirty_root):
    root, ids = dirty_root
    bad_list = tmp_path / "bad_ids.txt"
    bad_list.write_text("\n".join(ids[:3]) + "\n")
    with pytest.raises(executor.IngestError, match=r"split 'broken' .* is empty"):
        run_example_gen(
            tmp_path / "out", voc_root=root, split_recipes={"broken": f"file:{bad_list}"}, max_rejected_fraction=1.0
        )


def test_missing_root_fails_at_once(tmp_path, synth_root):
    missing = tmp_path / "no_such_voc"
    with pytest.raises(FileNotFoundError, match=r"no_such_voc.*--voc-root"):
        run_example_gen(tmp_path / "out", voc_root=missing)
    assert not (tmp_path / "out").exists()  # failed before Beam wrote anything
    with pytest.raises(FileNotFoundError, match=r"no reference TFRecords match"):
        run_example_gen(tmp_path / "out", reference_tfrecords={"train": str(tmp_path / "*.tfrecords")})
    with pytest.raises(ValueError, match=r"unknown split recipe 'voc_trian'"):
        run_example_gen(tmp_path / "out", voc_root=synth_root, split_recipes={"train": "voc_trian"})


def test_reference_tfrecords_are_imported(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    pairs = []
    for i in range(3):
        image = rng.integers(0, 256, size=(20 + i, 30, 3), dtype=np.uint8)
        mask = rng.choice(np.array([0, 5, 15, 255], np.uint8), size=(20 + i, 30))
        pairs.append((image, mask))
    path = str(tmp_path / "train.tfrecords")
    with tf.io.TFRecordWriter(path) as writer:
        for image, mask in pairs:
            writer.write(tfrecord.reference_example(image, mask).SerializeToString())
        broken = tfrecord.reference_example(pairs[0][0], pairs[0][1])
        broken.features.feature[tfrecord.REF_HEIGHT].int64_list.value[0] = 7  # truncated-looking record
        writer.write(broken.SerializeToString())

    artifact, report = run_example_gen(
        tmp_path / "out", reference_tfrecords={"train": str(tmp_path / "*.tfrecords")}, max_rejected_fraction=0.5
    )
    train = report["splits"]["train"]
    assert train["examples"] == 3
    assert train["rejects_by_reason"] == {"size_mismatch": 1}
    assert "train.tfrecords" in train["rejects"][0]["path"]
    decoded = sorted(read_split(artifact.uri, "train").values(), key=lambda r: r[0].shape[0])
    for (image, label, _), (source_image, source_mask) in zip(decoded, pairs):
        np.testing.assert_array_equal(image, source_image)
        np.testing.assert_array_equal(label, source_mask)


def test_workers_build_examples_without_tensorflow(voc_sample_root):
    """The worker-side encoder gives the bytes of a tf.train.Example with the official DeepLab keys (built here
    field by field with TensorFlow's own proto), and does not load TensorFlow."""
    import subprocess
    import sys

    import tensorflow as tf

    from components.voc_example_gen.transforms import example_bytes
    from data.splits import resolve_recipe

    def bytes_feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def int_feature(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    for ref in resolve_recipe("voc_train", voc_root=voc_sample_root):
        sample = tfrecord.load_sample(ref)
        expected = tf.train.Example(
            features=tf.train.Features(
                feature={
                    "image/encoded": bytes_feature(open(ref.image_path, "rb").read()),
                    "image/filename": bytes_feature(str(ref.id).encode()),
                    "image/format": bytes_feature(b"jpeg"),
                    "image/height": int_feature(sample.height),
                    "image/width": int_feature(sample.width),
                    "image/channels": int_feature(3),
                    "image/segmentation/class/encoded": bytes_feature(sample.mask_png),
                    "image/segmentation/class/format": bytes_feature(b"png"),
                }
            )
        )
        assert example_bytes(sample) == expected.SerializeToString(deterministic=True)
        assert tfrecord.to_example(sample) == expected
    code = (
        "import sys; from components.voc_example_gen.transforms import example_bytes; from data import tfrecord; "
        "from data.splits import resolve_recipe; "
        f"example_bytes(tfrecord.load_sample(resolve_recipe('voc_val', voc_root={str(voc_sample_root)!r})[0])); "
        "print('tensorflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr[-2000:]


def test_tfrecord_frame_is_tensorflows_record_format(tmp_path):
    """The workers' TFRecord framing (hardware CRC-32C) writes the bytes TensorFlow's writer writes."""
    import tensorflow as tf

    from components.voc_example_gen.transforms import tfrecord_frame

    records = [b"", b"x", bytes(range(256)) * 200]
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    assert open(path, "rb").read() == b"".join(tfrecord_frame(record) for record in records)


def test_input_config_maps_splits_to_recipes_and_references():
    config = component.make_input_config({"train": "train_aug", "val": "voc_val"}, {"val": "gs://b/val-*"})
    assert [(s.name, s.pattern) for s in config.splits] == [("train", "train_aug"), ("val", "reference:gs://b/val-*")]
    assert [s.name for s in component.make_input_config(None).splits] == ["train", "val"]
    with pytest.raises(ValueError, match="at least one split"):
        component.make_input_config({})

"""tf.Transform (issue 19): the analyzers of models/transform.py give exactly the counts an independent numpy pass
gives, class_weights "auto" is what it was before the Transform, class-balanced sampling follows the repeat-factor
rule, bad masks and empty splits are clear errors, and a normalization "dataset" export answers through the local
endpoint exactly like the model in process."""

import io
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import tfrecord
from data.synthetic import encode_jpeg, render_sample
from models import transform

NUM_CLASSES = 21


def _png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_split(path, pairs, names=None, jpeg=True):
    """GZIP TFRecord file `path` of (image uint8 [H,W,3], mask uint8 [H,W]) pairs in the ingest's format."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for i, (image, mask) in enumerate(pairs):
            as_jpeg = jpeg and i % 3 != 2  # JPEGs and PNGs, as the ingest writes them
            sample = tfrecord.Sample(
                image_bytes=encode_jpeg(image) if as_jpeg else _png(image),
                image_format="jpeg" if as_jpeg else "png",
                mask_png=_png(mask),
                height=mask.shape[0],
                width=mask.shape[1],
                filename=names[i] if names else f"img_{i}",
                converted=None,
            )
            writer.write(tfrecord.example_bytes(sample))


def _pairs(count, seed):
    rng = np.random.default_rng(seed)
    sizes = [(37, 45), (40, 56), (23, 61), (50, 33)]  # odd sizes, none alike: no resize anywhere
    return [render_sample(rng, *sizes[i % len(sizes)]) for i in range(count)]


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    root = tmp_path_factory.mktemp("transform")
    pairs = _pairs(7, seed=5)
    split = root / "Split-train"
    write_split(split / "data_tfrecord-00000-of-00001.gz", pairs)
    graph = transform.analyze_files(str(split), str(root / "transform_graph"), NUM_CLASSES, 255)
    return str(split), graph, transform.DatasetStatistics.from_transform_output(graph)


def test_analyzer_counts_equal_an_independent_numpy_count(analyzed):
    split, _, stats = analyzed
    pixels = np.zeros(256, np.int64)
    images = np.zeros(256, np.int64)
    channel_sum = np.zeros(3, np.int64)
    channel_sq = np.zeros(3, np.int64)
    count = 0
    for serialized in tf.data.TFRecordDataset(tf.io.gfile.glob(split + "/*"), "GZIP").as_numpy_iterator():
        image, mask, _ = tfrecord.parse_example_np(serialized)  # PIL: the decoder the ingest and evaluator use
        hist = np.bincount(mask.ravel(), minlength=256)
        pixels += hist
        images += hist > 0
        values = image.reshape(-1, 3).astype(np.int64)
        channel_sum += values.sum(0)
        channel_sq += (values**2).sum(0)
        count += len(values)
    assert stats.num_examples == 7
    assert list(stats.class_pixels) == pixels[:NUM_CLASSES].tolist()
    assert stats.ignore_pixels == pixels[255] > 0
    assert list(stats.class_images) == images[:NUM_CLASSES].tolist()
    assert list(stats.channel_sum) == channel_sum.tolist() and list(stats.channel_sum_sq) == channel_sq.tolist()
    assert stats.pixel_count == count
    mean = channel_sum / count
    all_pixels = np.concatenate(
        [
            tfrecord.parse_example_np(s)[0].reshape(-1, 3)
            for s in tf.data.TFRecordDataset(tf.io.gfile.glob(split + "/*"), "GZIP").as_numpy_iterator()
        ]
    ).astype(np.float64)
    np.testing.assert_allclose(stats.channel_mean, all_pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.channel_std, all_pixels.std(0), rtol=1e-6)
    np.testing.assert_allclose(stats.channel_mean, mean, rtol=1e-12)


def test_class_weights_auto_are_those_of_before_and_read_no_record(analyzed, monkeypatch, caplog):
    """Same weights as the Trainer's own Python pass gave before the Transform (LabelStatsGen's histogram of the
    records, data.label_histogram), now read from the transform graph without touching the records."""
    import logging

    from data.label_histogram import histogram_of_examples
    from models import hparams as hparams_lib
    from models import train as train_lib
    from models.losses import class_weights_from_histogram

    split, graph, _ = analyzed
    records = tf.data.TFRecordDataset(tf.io.gfile.glob(split + "/*"), "GZIP").as_numpy_iterator()
    before = histogram_of_examples(records)["pixels"]  # what models.train.class_pixel_histogram returned
    hp = hparams_lib.preset("demo", class_weights="auto")

    def no_pass(*args, **kwargs):
        raise AssertionError("the Trainer read the records for its statistics")

    monkeypatch.setattr(transform, "analyze_files", no_pass)
    monkeypatch.setattr("models.input_pipeline.list_files", no_pass)
    with caplog.at_level(logging.INFO, logger="models.transform"):
        stats, _, how = train_lib.dataset_statistics(hp, "/nowhere", transform_graph=graph)
    for method in ("auto", "inverse_sqrt"):
        weights, description = train_lib.resolve_class_weights(hp.replace(class_weights=method), stats)
        assert weights == class_weights_from_histogram(before, method, num_classes=NUM_CLASSES)
        assert f"from {graph}" in description
    assert how.startswith(f"the transform graph {graph} (Transform component), 7 examples")
    # Without a transform graph and without a setting that needs them, nothing is computed.
    assert train_lib.dataset_statistics(hp.replace(class_weights=None), "/nowhere") == (None, None, "not needed")


def test_in_process_statistics_come_from_the_same_preprocessing_fn(analyzed, tmp_path):
    from models import hparams as hparams_lib
    from models import train as train_lib

    split, _, expected = analyzed
    hp = hparams_lib.preset("demo", normalization="dataset")
    stats, output, how = train_lib.dataset_statistics(hp, split, work_dir=str(tmp_path))
    assert "analyzed in this process" in how
    assert stats.to_json_dict() | {"source": ""} == expected.to_json_dict() | {"source": ""}
    resolved = train_lib.resolve_normalization(hp, stats)
    assert resolved.model.input_mean == expected.channel_mean and resolved.model.input_std == expected.channel_std
    assert hparams_lib.HParams.from_dict(resolved.to_dict()) == resolved


def test_class_balanced_sampling_follows_the_repeat_factor_rule(tmp_path):
    """100 images, the rare class 7 in 5 of them: over 2,000 sampled images its share is within 10% of
    sum_rare r_i / sum_i r_i with r_i = max(1, sqrt(t / f_c))."""
    from models import input_pipeline

    pairs = []
    for i in range(100):
        mask = np.full((6, 8), 2 if i % 2 else 3, np.uint8)
        mask[:2, :2] = 0
        if i % 20 == 0:
            mask[3:, 4:] = 7
        pairs.append((np.full((6, 8, 3), i, np.uint8), mask))
    names = [f"{'rare' if i % 20 == 0 else 'common'}_{i}" for i in range(100)]
    split = tmp_path / "Split-train"
    write_split(split / "data_tfrecord-00000-of-00001.gz", pairs, names=names, jpeg=False)
    graph = transform.analyze_files(str(split), str(tmp_path / "graph"), NUM_CLASSES, 255)
    stats = transform.DatasetStatistics.from_transform_output(graph)
    assert stats.class_images[7] == 5 and stats.class_images[0] == 100 and stats.class_images[2] == 50
    threshold = 0.1
    r_rare = max(1.0, math.sqrt(threshold / 0.05))  # 1.414: the rule's factor of the rare class
    expected_share = 5 * r_rare / (5 * r_rare + 95)

    import tensorflow_transform as tft

    presence = transform.class_presence_fn(tft.TFTransformOutput(graph))
    records = input_pipeline._record_dataset(input_pipeline.list_files(str(split)), True, 0)
    pairs_ds = input_pipeline.with_repeat_factors(records, presence, stats.class_image_fraction, threshold)
    factors = {tfrecord.parse_example_np(s)[2]: float(r) for s, r in pairs_ds.as_numpy_iterator()}
    assert all(abs(r - (r_rare if name.startswith("rare") else 1.0)) < 1e-6 for name, r in factors.items())
    names_ds = pairs_ds.map(
        lambda s, r: (
            tf.io.parse_single_example(s, {tfrecord.IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string)})[
                tfrecord.IMAGE_FILENAME
            ],
            r,
        )
    )
    sampled = [n.decode() for n in input_pipeline.repeat_factor_sample(names_ds, seed=3).take(2000).as_numpy_iterator()]
    share = sum(n.startswith("rare") for n in sampled) / len(sampled)
    assert abs(share - expected_share) <= 0.1 * expected_share, (share, expected_share)
    assert share > 1.2 * 0.05  # more than uniform sampling gives

    # The training input pipeline runs the same path and still gives crops.
    from models import hparams as hparams_lib

    hp = hparams_lib.preset("demo", sampling="class_balanced", repeat_threshold=threshold, crop_size=9, batch_size=4)
    images, labels = next(
        iter(
            input_pipeline.train_dataset(
                str(split),
                hp,
                deterministic=True,
                presence_fn=presence,
                class_image_fraction=stats.class_image_fraction,
            )
        )
    )
    assert images.shape == (4, 9, 9, 3) and labels.shape == (4, 9, 9, 1)


def test_a_mask_value_outside_the_label_map_names_the_record(tmp_path):
    pairs = _pairs(3, seed=2)
    pairs[1][1][0, 0] = 40  # neither a class id (0..20) nor 255
    split = tmp_path / "Split-train"
    write_split(split / "data_tfrecord-00000-of-00001.gz", pairs, names=["good_0", "bad_one", "good_2"])
    with pytest.raises(ValueError, match=r"mask value outside the label map .*bad_one.*40") as raised:
        transform.analyze_files(str(split), str(tmp_path / "graph"), NUM_CLASSES, 255)
    assert "good_0" not in str(raised.value) and "good_2" not in str(raised.value)


def test_an_empty_training_split_fails_before_beam_starts(tmp_path, monkeypatch):
    split = tmp_path / "Split-train"
    write_split(split / "data_tfrecord-00000-of-00001.gz", [])
    import apache_beam as beam

    monkeypatch.setattr(beam, "Pipeline", lambda *a, **k: pytest.fail("Beam started"))
    with pytest.raises(ValueError, match="the training split is empty: no record in"):
        transform.analyze_files(str(split), str(tmp_path / "graph"), NUM_CLASSES, 255)


@pytest.mark.slow  # an export, the local endpoint and a TensorFlow-only process: 1-2.5 minutes on 2 shared cores
def test_normalization_dataset_export_served_equals_in_process_labels(analyzed, tmp_path):
    """The export bakes the dataset mean/std in (constants: it loads and answers with TensorFlow alone), records
    the transform graph and the statistics, and `deeplab serve`'s endpoint answers the in-process labels."""
    import tf_keras as keras

    from models import export, model_io
    from models import hparams as hparams_lib
    from models import train as train_lib
    from serving.grpc_client import GrpcClient
    from serving.server import ModelServer

    _, graph, stats = analyzed
    hp = hparams_lib.preset(
        "demo", normalization="dataset", alpha=0.35, aspp_filters=8, crop_size=33, precision="float32"
    )
    hp = train_lib.resolve_normalization(hp, stats)
    keras.utils.set_random_seed(0)
    model = model_io.randomize_weights(model_io.build_model(hp.model, "float32"), seed=0)
    # The network normalizes with the dataset's statistics: not the ImageNet scaling.
    preprocess = model.get_layer("preprocess")
    assert preprocess.mean == list(stats.channel_mean) and preprocess.std == list(stats.channel_std)
    base = tmp_path / "serving" / "deeplab"
    path = str(base / "1")
    export.export_serving_model(
        model,
        path,
        hparams=hp,
        config=hp.model,
        warmup_sizes=(),
        extra_config={"transform": train_lib.transform_record(hp, stats)},
    )
    recorded = json.load(open(os.path.join(path, "assets.extra", "deeplab_export.json")))
    assert recorded["transform"]["transform_graph"] == graph
    assert recorded["transform"]["statistics"]["class_pixels"] == list(stats.class_pixels)
    assert recorded["transform"]["statistics"]["channel_mean"] == list(stats.channel_mean)
    assert recorded["model_config"]["input_std"] == list(stats.channel_std)
    assert model_io.load_model(path).model.get_layer("preprocess").mean == list(stats.channel_mean)

    rng = np.random.default_rng(9)
    images = [render_sample(rng, h, w)[0] for h, w in ((37, 45), (40, 29))]
    encoded = [_png(image) for image in images]
    expected = [np.argmax(model(image[None].astype(np.float32)).numpy()[0], -1) for image in images]
    with ModelServer(str(base), "deeplab", grpc_port=0, rest_port=0) as server:
        served = GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=60).segment(encoded)
    for (labels, _), want in zip(served, expected):
        np.testing.assert_array_equal(labels, want)

    # TensorFlow alone (no project code, no TFT) loads it and gives the same labels.
    (tmp_path / "0.png").write_bytes(encoded[0])
    code = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        sig = tf.saved_model.load({path!r}).signatures["serving_default"]
        out = sig(images=tf.constant([open("0.png", "rb").read()]))["segmentation_map"].numpy()[0]
        assert not any(m.split(".")[0] in ("models", "data", "serving", "tensorflow_transform") for m in sys.modules)
        print(json.dumps(out.tolist()))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.array(json.loads(result.stdout.strip().splitlines()[-1])), expected[0])

"""Synthetic VOCdevkit generator and `deeplab synth`."""

import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from data.synthetic import STYLES, SYNTHETIC_CLASS_IDS, generate_voc_dataset, render_sample
from data.voc import VocDevkit


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def _synth(output, *flags, num_train=3, num_val=2):
    """Exit code of `deeplab synth` writing small images (32..40 px) to `output`."""
    import runner

    return runner.main(
        ["synth", "--output", str(output), "--num-train", str(num_train), "--num-val", str(num_val)]
        + ["--min-size", "32", "--max-size", "40", *flags]
    )


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return out, generate_voc_dataset(out, num_train=12, num_val=4, seed=7, min_size=48, max_size=96)


def test_layout(synth):
    out, root = synth
    assert root == os.path.join(str(out), "VOC2012")
    assert sorted(os.listdir(os.path.join(root, "ImageSets", "Segmentation"))) == [
        "train.txt",
        "trainval.txt",
        "val.txt",
    ]
    voc = VocDevkit(out)
    train, val = voc.split_ids("train"), voc.split_ids("val")
    assert train[0] == "2099_000001" and len(train) == 12 and len(val) == 4
    assert voc.split_ids("trainval") == train + val and not set(train) & set(val)
    for image_id in train + val:
        image, mask = Image.open(voc.image_path(image_id)), Image.open(voc.mask_path(image_id))
        assert image.format == "JPEG" and image.mode == "RGB"
        assert mask.format == "PNG" and mask.mode == "P" and mask.size == image.size
    assert len(os.listdir(os.path.join(root, "JPEGImages"))) == 16


def test_masks_look_like_voc(synth):
    voc = VocDevkit(synth[0])
    sizes, classes = set(), set()
    for image_id in voc.split_ids("trainval"):
        mask = Image.open(voc.mask_path(image_id))
        assert mask.getpalette()[:6] == [0, 0, 0, 128, 0, 0]  # VOC colour map
        label = np.asarray(mask)
        values = set(np.unique(label).tolist())
        assert 0 in values and 255 in values, "background and 255 boundary bands in every mask"
        assert values - {0, 255} and values - {0, 255} <= set(SYNTHETIC_CLASS_IDS)
        classes |= values - {0, 255}
        sizes.add(mask.size)
        # 255 marks thin outlines, not whole objects.
        band = label == 255
        assert band.mean() < 0.35
    assert len(classes) >= 4, f"several classes expected, got {classes}"
    assert len(sizes) >= 8, "image sizes vary"


def test_boundary_band_width():
    rng = np.random.default_rng(0)
    _, label = render_sample(rng, 120, 120, max_objects=1)
    objects = (label != 0) & (label != 255)
    band = label == 255
    # Along a row crossing the object, each outline crossing is a run of ~3 band pixels.
    rows = np.where(objects.any(axis=1))[0]
    row = band[rows[len(rows) // 2]]
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]]))))[::2]
    assert len(runs) >= 2 and all(2 <= r <= 5 for r in runs), runs


def test_deterministic_by_seed(tmp_path, synth):
    again = generate_voc_dataset(tmp_path / "a", num_train=12, num_val=4, seed=7, min_size=48, max_size=96)
    assert _digest(again) == _digest(synth[1])
    other = generate_voc_dataset(tmp_path / "b", num_train=12, num_val=4, seed=8, min_size=48, max_size=96)
    assert _digest(other) != _digest(synth[1])


def test_classes_differ_in_local_appearance():
    """Each class has its own colour: mean object colours are far apart (learnable from a few pixels)."""
    rgb = np.array([s.rgb for s in STYLES], dtype=float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)[np.triu_indices(len(STYLES), 1)]
    assert distances.min() > 80
    assert len({s.shape for s in STYLES}) == len({s.texture for s in STYLES}) == len(STYLES)
    rng = np.random.default_rng(1)
    image, label = render_sample(rng, 96, 96)
    background = image[label == 0].astype(float)
    saturation = background.max(axis=1) - background.min(axis=1)
    assert np.median(saturation) < 60, "backgrounds are low-saturation"


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="min_size"):
        generate_voc_dataset(tmp_path, num_train=1, num_val=1, min_size=100, max_size=50)


def test_cli(tmp_path, capsys):
    assert _synth(tmp_path, "--sbd", "--defects") == 0
    out = capsys.readouterr().out
    assert "3 train + 2 val images" in out and os.path.join(str(tmp_path), "VOC2012") in out
    with open(tmp_path / "synth_summary.json") as f:
        summary = json.load(f)
    assert summary["splits"] == {"train": 3, "val": 2} and summary["seed"] == 0
    assert summary["classes"]["background"]["images"] == 5 and 0 < summary["ignore_pixel_share"] < 0.5
    assert 32 <= summary["height"][0] <= summary["height"][1] <= 40
    assert abs(sum(c["pixel_share"] for c in summary["classes"].values()) - 1) < 0.01
    assert Image.open(tmp_path / "synth_preview.png").size[0] > 3 * 32
    assert summary["defects"]["2099_900001"] == "corrupt_image"
    assert len(VocDevkit(tmp_path).split_ids("train")) == 3 + len(summary["defects"])
    assert VocDevkit(tmp_path).split_ids("val") == ["2099_000004", "2099_000005"]
    from data.sbd import SbdDataset

    sbd = SbdDataset(tmp_path / "sbd")
    assert sbd.split_ids("train") == ["2099_000002", "2099_000003", "2099_000004"]


def test_add_defects_gives_each_reason(tmp_path):
    from data import tfrecord
    from data.splits import resolve_recipe
    from data.synthetic import add_defects

    root = generate_voc_dataset(tmp_path, num_train=2, num_val=1, seed=0, min_size=32, max_size=40)
    expected = add_defects(root)
    refs = resolve_recipe("voc_train", voc_root=root)
    assert [r.id for r in refs] == ["2099_000001", "2099_000002"] + list(expected)
    got = {}
    for ref in refs[2:]:
        try:
            got[ref.id] = tfrecord.load_sample(ref).converted
        except tfrecord.BadSample as e:
            got[ref.id] = e.reason
    assert got == expected
    assert len(VocDevkit(root).split_ids("val")) == 1


@pytest.mark.slow
def test_tiny_cnn_learns_synthetic_data(tmp_path):
    """Learnability: a 4-layer dilated FCN (~24k parameters) trained from scratch for 15 epochs on 200 crops of
    96x96 reaches val mIoU >= 0.9 over the classes present (measured: 0.99 after 11 epochs, ~2 min on 1 core)."""
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    voc = VocDevkit(generate_voc_dataset(tmp_path, num_train=200, num_val=40, seed=0, min_size=96, max_size=128))

    def load(split):
        pairs = [
            (
                np.asarray(Image.open(voc.image_path(i)), np.float32)[:96, :96],
                np.asarray(Image.open(voc.mask_path(i)), np.int32)[:96, :96],
            )
            for i in voc.split_ids(split)
        ]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    (x, y), (xv, yv) = load("train"), load("val")
    inputs = keras.Input((None, None, 3))
    h = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    for filters, rate in ((16, 1), (32, 2), (32, 4), (32, 1)):
        h = keras.layers.Conv2D(filters, 3, padding="same", dilation_rate=rate, activation="relu")(h)
    model = keras.Model(inputs, keras.layers.Conv2D(21, 1)(h))

    def loss(labels, logits):
        labels = tf.cast(tf.reshape(labels, tf.shape(logits)[:3]), tf.int32)
        keep = tf.cast(labels != 255, tf.float32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.where(labels == 255, 0, labels), logits)
        return tf.reduce_sum(ce * keep) / tf.maximum(tf.reduce_sum(keep), 1.0)

    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(x, y, batch_size=16, epochs=15, verbose=0)
    pred, valid = np.argmax(model.predict(xv, verbose=0), -1), yv != 255
    ious = []
    for c in (0,) + SYNTHETIC_CLASS_IDS:
        union = (((pred == c) | (yv == c)) & valid).sum()
        if union:
            ious.append((((pred == c) & (yv == c)) & valid).sum() / union)
    assert np.mean(ious) >= 0.9, ious


def test_generate_dataset_default_is_generate_voc_dataset(tmp_path, synth):
    from data.synthetic import generate_dataset

    root = generate_dataset(tmp_path, num_train=12, num_val=4, seed=7, min_size=48, max_size=96)
    assert _digest(root) == _digest(synth[1])


def test_generate_dataset_five_classes_voc_layout(tmp_path):
    """A 5-class map with custom colours in the VOCdevkit layout: palette PNGs of ids 0..4 and 255."""
    from data.label_map import LabelMap
    from data.synthetic import generate_dataset
    from tests.helpers import FIVE_CLASSES

    five = LabelMap.from_json_dict(FIVE_CLASSES)
    root = generate_dataset(tmp_path, label_map=five, num_train=6, num_val=2, seed=3, min_size=40, max_size=64)
    voc = VocDevkit(tmp_path)
    assert os.path.samefile(voc.root, root) and len(voc.split_ids("train")) == 6
    assert LabelMap.load(os.path.join(root, "label_map.json")) == five
    values = set()
    for image_id in voc.split_ids("trainval"):
        mask = Image.open(voc.mask_path(image_id))
        assert mask.mode == "P" and mask.getpalette()[:9] == [0, 0, 0, 128, 64, 128, 0, 0, 142]
        values |= set(np.unique(np.asarray(mask)).tolist())
    assert {0, 255} <= values <= {0, 1, 2, 3, 4, 255} and len(values) >= 4
    again = generate_dataset(
        tmp_path / "again", label_map=five, num_train=6, num_val=2, seed=3, min_size=40, max_size=64
    )
    assert _digest(again) == _digest(root)


def test_cli_num_classes_generic_layout(tmp_path, capsys):
    from data.generic import GenericDataset

    assert _synth(tmp_path, "--num-classes", "5", "--layout", "generic", "--rgb-masks") == 0
    out = capsys.readouterr().out
    assert "generic layout" in out and "'synthetic5': 5 classes" in out
    with open(tmp_path / "synth_summary.json") as f:
        summary = json.load(f)
    assert summary["num_classes"] == 5 and summary["splits"] == {"train": 3, "val": 2}
    assert set(summary["classes"]) <= {"background", "class_1", "class_2", "class_3", "class_4"}
    assert summary["classes"]["background"]["images"] == 5 and 0 < summary["ignore_pixel_share"] < 0.5
    assert (tmp_path / "synth_preview.png").is_file()
    ds = GenericDataset(tmp_path / "dataset")
    assert ds.label_map.num_classes == 5 and Image.open(ds.mask_path("2099_000001")).mode == "RGB"


def test_cli_label_map_file(tmp_path, capsys):
    import runner
    from data.label_map import LabelMap

    path = LabelMap.synthetic(3).save(tmp_path / "three.json")
    assert _synth(tmp_path / "out", "--label-map", str(path), num_train=2, num_val=1) == 0
    with open(tmp_path / "out" / "synth_summary.json") as f:
        summary = json.load(f)
    assert summary["num_classes"] == 3 and summary["layout"] == "voc"
    assert VocDevkit(tmp_path / "out").split_ids("train") == ["2099_000001", "2099_000002"]
    with pytest.raises(SystemExit, match="VOC-only"):  # one line naming the flags, exit status 1
        runner.main(["synth", "--output", str(tmp_path / "bad"), "--num-classes", "4", "--sbd"])
    with pytest.raises(SystemExit, match="--rgb-masks needs --layout generic"):
        runner.main(["synth", "--output", str(tmp_path / "bad"), "--num-classes", "4", "--rgb-masks"])
    with pytest.raises(SystemExit):  # --label-map and --num-classes exclude each other
        runner.main(["synth", "--output", str(tmp_path / "bad"), "--num-classes", "4", "--label-map", str(path)])

"""Readers of your own data (data/generic.py, data/cityscapes.py, data/ade20k.py) on small trees in the real layouts."""

import inspect
import os

import numpy as np
import pytest
from PIL import Image

from data.ade20k import Ade20kDataset
from data.cityscapes import CityscapesDataset
from data.generic import GenericDataset
from data.label_map import LabelMap, MaskValueError
from data.labelled import LabelledDataset
from data.splits import SampleRef
from tests.helpers import FIVE_CLASSES, tiny_generic_dataset


def _png(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode=mode).save(path)


def _jpg(path, h=6, w=8):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(path, quality=95)


FIVE = LabelMap.from_json_dict(FIVE_CLASSES)


@pytest.fixture
def generic_tree(tmp_path):
    root = tmp_path / "mine"
    ids = {"a": np.array([[0, 1], [2, 255]]), "b": np.array([[4, 4], [3, 0]]), "c": np.array([[1, 1], [1, 1]])}
    for i, label in ids.items():
        if i == "c":
            _png(str(root / "images" / f"{i}.png"), np.zeros((2, 2, 3)))  # PNG images are found too
        else:
            _jpg(str(root / "images" / f"{i}.jpg"), 2, 2)
        _png(str(root / "masks" / f"{i}.png"), label, "L")
    os.makedirs(root / "splits")
    (root / "splits" / "train.txt").write_text("a\nc\n")
    (root / "splits" / "val.txt").write_text("b\n")
    return root, ids


def test_generic_reader(generic_tree):
    root, ids = generic_tree
    ds = GenericDataset(root, label_map=FIVE)
    assert isinstance(ds, LabelledDataset) and ds.label_map == FIVE
    assert ds.split_ids("train") == ["a", "c"] and ds.split_ids("val") == ["b"]
    assert sorted(ds.available_splits()) == ["train", "val"] and ds.split_ids("all") == ["a", "b", "c"]
    assert ds.image_path("a").endswith(os.path.join("images", "a.jpg"))
    assert ds.image_path("c").endswith(os.path.join("images", "c.png"))
    assert ds.mask_path("b").endswith(os.path.join("masks", "b.png"))
    refs = ds.refs("train")
    assert refs[0] == SampleRef("a", "generic", ds.image_path("a"), ds.mask_path("a"))
    for i, label in ids.items():
        assert ds.load_mask(i).tolist() == label.tolist() and ds.load_mask(i).dtype == np.uint8
    samples = ds.iter_samples("train")
    assert inspect.isgenerator(samples)
    ref, image, mask = next(samples)
    assert ref.id == "a" and image.shape == (2, 2, 3) and mask.shape == (2, 2)
    with pytest.raises(FileNotFoundError, match=r"split list .*nope\.txt does not exist \(available"):
        ds.split_ids("nope")


def test_generic_rgb_masks_and_bad_values(generic_tree):
    root, _ = generic_tree
    _png(str(root / "masks" / "a.png"), FIVE.colors()[np.array([[0, 1], [2, 255]])])  # RGB colour mask
    ds = GenericDataset(root, label_map=FIVE)
    assert ds.load_mask("a").tolist() == [[0, 1], [2, 255]]
    _png(str(root / "masks" / "a.png"), np.array([[[1, 2, 3], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]]))
    with pytest.raises(MaskValueError, match=r"masks/a\.png: mask colours \[\[1, 2, 3\]\]"):
        ds.load_mask("a")
    _png(str(root / "masks" / "b.png"), np.array([[0, 7], [9, 0]]), "L")
    with pytest.raises(MaskValueError, match=r"masks/b\.png: mask values \[7, 9\]"):
        ds.load_mask("b")


def test_generic_label_map_file_and_default(generic_tree):
    root, _ = generic_tree
    assert GenericDataset(root).label_map == LabelMap.voc()  # no label_map.json: VOC
    FIVE.save(root / "label_map.json")
    assert GenericDataset(root).label_map == FIVE
    assert GenericDataset(root, label_map="cityscapes").label_map == LabelMap.cityscapes()


def test_generic_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing.*is not a directory; expected layout: ROOT/images"):
        GenericDataset(tmp_path / "nothing")
    os.makedirs(tmp_path / "r" / "images")
    with pytest.raises(FileNotFoundError, match=r"folder .*r/masks does not exist; expected layout"):
        GenericDataset(tmp_path / "r")
    os.makedirs(tmp_path / "r" / "labels")
    ds = GenericDataset(tmp_path / "r", masks_dir="labels", splits_dir="lists")
    with pytest.raises(FileNotFoundError, match=r"lists/train\.txt does not exist"):
        ds.split_ids("train")


@pytest.fixture
def cityscapes_tree(tmp_path):
    root = tmp_path / "cityscapes"
    pairs = {
        ("train", "aachen", "aachen_000000_000019"): [[7, 8, 0], [26, 33, 34]],
        ("train", "bochum", "bochum_000000_000313"): [[11, 24, 255], [31, 1, 23]],
        ("val", "frankfurt", "frankfurt_000000_000294"): [[21, 22, 5], [7, 7, 7]],
    }
    for (split, city, image_id), label in pairs.items():
        _png(str(root / "leftImg8bit" / split / city / f"{image_id}_leftImg8bit.png"), np.zeros((2, 3, 3)))
        _png(str(root / "gtFine" / split / city / f"{image_id}_gtFine_labelIds.png"), label, "L")
        _png(str(root / "gtFine" / split / city / f"{image_id}_gtFine_color.png"), np.zeros((2, 3, 3)))
    return root


def test_cityscapes_reader(cityscapes_tree):
    ds = CityscapesDataset(cityscapes_tree)
    assert ds.label_map == LabelMap.cityscapes() and sorted(ds.available_splits()) == ["train", "val"]
    assert ds.split_ids("train") == ["aachen_000000_000019", "bochum_000000_000313"]
    assert ds.split_ids("val") == ["frankfurt_000000_000294"]
    assert ds.mask_path("bochum_000000_000313").endswith(
        os.path.join("gtFine", "train", "bochum", "bochum_000000_000313_gtFine_labelIds.png")
    )
    assert ds.load_mask("aachen_000000_000019").tolist() == [[0, 1, 255], [13, 18, 255]]
    assert ds.load_mask("bochum_000000_000313").tolist() == [[2, 11, 255], [16, 255, 10]]
    # A fresh reader finds an id's split and city without being told.
    fresh = CityscapesDataset(cityscapes_tree)
    assert fresh.load_mask("frankfurt_000000_000294").tolist() == [[8, 9, 255], [0, 0, 0]]
    assert fresh.image_path("frankfurt_000000_000294").endswith(
        os.path.join("leftImg8bit", "val", "frankfurt", "frankfurt_000000_000294_leftImg8bit.png")
    )
    refs = list(ds.iter_refs("val"))
    assert refs == [
        SampleRef("frankfurt_000000_000294", "cityscapes", fresh.image_path(refs[0].id), fresh.mask_path(refs[0].id))
    ]
    assert [s[1].shape for s in ds.iter_samples("train")] == [(2, 3, 3), (2, 3, 3)]


def test_cityscapes_missing_folders(cityscapes_tree, tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"Cityscapes folder .*gtFine does not exist; expected layout: "
        r"ROOT/leftImg8bit/\{train,val,test\}",
    ):
        os.makedirs(tmp_path / "half" / "leftImg8bit")
        CityscapesDataset(tmp_path / "half")
    with pytest.raises(
        FileNotFoundError,
        match=r"split folder .*leftImg8bit/test does not exist \(available: "
        r"\['train', 'val'\]\)",
    ):
        CityscapesDataset(cityscapes_tree).split_ids("test")


@pytest.fixture
def ade_tree(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    pairs = {
        ("training", "ADE_train_00000001"): [[0, 1, 2], [150, 13, 0]],
        ("training", "ADE_train_00000002"): [[5, 5, 5], [5, 5, 5]],
        ("validation", "ADE_val_00000001"): [[0, 0, 0], [3, 2, 1]],
    }
    for (split, image_id), label in pairs.items():
        _jpg(str(root / "images" / split / f"{image_id}.jpg"), 2, 3)
        _png(str(root / "annotations" / split / f"{image_id}.png"), label, "L")
    return root


def test_ade20k_reader(ade_tree):
    for given in (ade_tree, ade_tree.parent):
        ds = Ade20kDataset(given)
        assert os.path.samefile(ds.root, ade_tree)
    assert ds.label_map == LabelMap.ade20k() and ds.label_map.num_classes == 150
    assert ds.split_ids("training") == ds.split_ids("train") == ["ADE_train_00000001", "ADE_train_00000002"]
    assert ds.split_ids("val") == ["ADE_val_00000001"]
    assert ds.load_mask("ADE_train_00000001").tolist() == [[255, 0, 1], [149, 12, 255]]  # shift by one
    assert Ade20kDataset(ade_tree).load_mask("ADE_val_00000001").tolist() == [[255, 255, 255], [2, 1, 0]]
    ref = next(ds.iter_refs("validation"))
    assert ref.source == "ade20k" and ref.image_path.endswith(
        os.path.join("images", "validation", "ADE_val_00000001.jpg")
    )
    with pytest.raises(FileNotFoundError, match=r"ADE20K split folder .*testing does not exist"):
        ds.split_ids("testing")


def test_ade20k_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ADE20K folder .*images does not exist .*expected layout"):
        os.makedirs(tmp_path / "empty")
        Ade20kDataset(tmp_path / "empty")
    os.makedirs(tmp_path / "x" / "images")
    with pytest.raises(FileNotFoundError, match=r"ADE20K folder .*x/annotations does not exist"):
        Ade20kDataset(tmp_path / "x")


def test_missing_mask_names_path(generic_tree):
    root, _ = generic_tree
    os.remove(root / "masks" / "a.png")
    with pytest.raises(FileNotFoundError, match=r"mask file .*masks/a\.png does not exist"):
        GenericDataset(root, label_map=FIVE).load_mask("a")


def test_synthetic_five_class_generic_rgb(tmp_path):
    """generate_dataset with a 5-class map and RGB masks reads back through GenericDataset (train ids)."""
    from data.synthetic import generate_dataset, styles_for_label_map

    assert [s.class_id for s in styles_for_label_map(FIVE)] == [1, 2, 3, 4]
    assert styles_for_label_map(FIVE)[1].rgb == (0, 0, 142)  # the palette colour
    root = tiny_generic_dataset(tmp_path, FIVE)
    assert root == os.path.join(str(tmp_path), "dataset")
    ds = GenericDataset(root)  # label_map.json written beside the data
    assert ds.label_map == FIVE and len(ds.split_ids("train")) == 4 and len(ds.split_ids("val")) == 2
    seen = set()
    for _, image, mask in ds.iter_samples("trainval"):
        assert image.shape[:2] == mask.shape
        seen |= set(np.unique(mask).tolist())
    assert Image.open(ds.mask_path(ds.split_ids("val")[0])).mode == "RGB"
    assert 0 in seen and 255 in seen and seen - {0, 255} <= {1, 2, 3, 4} and len(seen - {0, 255}) >= 2
    with pytest.raises(ValueError, match="no palette colour for ids"):
        generate_dataset(tmp_path / "x", label_map=LabelMap(names=("a", "b")), layout="generic", rgb_masks=True)
    with pytest.raises(ValueError, match="layout='generic'"):
        generate_dataset(tmp_path / "y", label_map=FIVE, rgb_masks=True)

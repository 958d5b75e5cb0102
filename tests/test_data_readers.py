"""VOC/SBD readers and the palette, on small synthetic trees."""

import io
import os

import numpy as np
import pytest
import scipy.io

from data.sbd import SbdDataset, read_sbd_mask
from data.synthetic import generate_sbd_dataset, generate_voc_dataset
from data.voc import IGNORE_LABEL, NUM_CLASSES, VOC_CLASSES, VocDevkit, voc_palette


@pytest.fixture(scope="module")
def voc_tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("vocdevkit") / "VOCdevkit"
    root = generate_voc_dataset(out, num_train=3, num_val=2, seed=1, min_size=32, max_size=48)
    return out, root


def test_constants_and_palette():
    assert NUM_CLASSES == 21 and IGNORE_LABEL == 255
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background" and VOC_CLASSES[20] == "tvmonitor"
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    # Spot values from the devkit's VOClabelcolormap.m.
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[15].tolist() == [192, 128, 128]
    assert palette[20].tolist() == [0, 64, 128]
    assert palette[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in palette}) == 256
    palette[0] = 7  # a copy: callers cannot corrupt the shared table
    assert voc_palette()[0].tolist() == [0, 0, 0]


def test_voc_root_forms(voc_tree):
    devkit_dir, root = voc_tree
    for given in (root, devkit_dir, devkit_dir.parent):
        voc = VocDevkit(given)
        assert os.path.samefile(voc.root, root)
    voc = VocDevkit(root)
    assert voc.split_ids("train") == ["2099_000001", "2099_000002", "2099_000003"]
    assert voc.split_ids("val") == ["2099_000004", "2099_000005"]
    assert voc.image_path("2099_000001") == os.path.join(root, "JPEGImages", "2099_000001.jpg")
    assert voc.mask_path("2099_000001") == os.path.join(root, "SegmentationClass", "2099_000001.png")
    assert voc.has_image("2099_000001") and not voc.has_image("2099_999999")
    assert voc.image_ids() == {f"2099_00000{i}" for i in range(1, 6)}


def test_voc_split_list_formats(tmp_path):
    root = tmp_path / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Segmentation" / "odd.txt").write_text("  a_1 \n\nb_2 -1\r\nc_3\n")
    assert VocDevkit(root).split_ids("odd") == ["a_1", "b_2", "c_3"]


def test_voc_missing_split_names_the_file(voc_tree):
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Segmentation/test\.txt.*available: \['train', "):
        VocDevkit(voc_tree[1]).split_ids("test")


def test_voc_bad_roots(tmp_path):
    with pytest.raises(FileNotFoundError, match="--voc-root"):
        VocDevkit(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no VOC dataset"):
        VocDevkit(tmp_path / "empty")
    for year in ("VOC2007", "VOC2010"):
        (tmp_path / "two" / year / "JPEGImages").mkdir(parents=True)
    with pytest.raises(ValueError, match="ambiguous"):
        VocDevkit(tmp_path / "two")
    (tmp_path / "two" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    assert VocDevkit(tmp_path / "two").root.endswith("VOC2012")


@pytest.fixture(scope="module")
def sbd_tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("sbd") / "benchmark_RELEASE"
    return out, generate_sbd_dataset(out, num_train=2, num_val=1, seed=2, min_size=24, max_size=40)


def test_sbd_reader(sbd_tree):
    release, dataset = sbd_tree
    for given in (release, dataset):
        sbd = SbdDataset(given)
        assert os.path.samefile(sbd.root, dataset)
    assert sbd.split_ids("train") == ["2099_000001", "2099_000002"]
    assert sbd.split_ids("val") == ["2099_000003"]
    assert sbd.image_ids() == {"2099_000001", "2099_000002", "2099_000003"}
    assert sbd.image_path("x").endswith(os.path.join("img", "x.jpg"))
    assert sbd.mask_path("x").endswith(os.path.join("cls", "x.mat"))
    with pytest.raises(FileNotFoundError, match=r"test\.txt"):
        sbd.split_ids("test")
    with pytest.raises(FileNotFoundError, match="--sbd-root"):
        SbdDataset(release.parent)


def test_read_sbd_mask_real_layout(tmp_path):
    # The exact layout of SBD's cls/*.mat: a 1x1 struct GTcls with Segmentation, Boundaries, CategoriesPresent.
    seg = np.zeros((5, 7), dtype=np.uint8)
    seg[1:4, 2:6] = 15
    seg[0, 0] = 20
    path = tmp_path / "2008_000002.mat"
    scipy.io.savemat(
        path,
        {
            "GTcls": {
                "Segmentation": seg,
                "Boundaries": np.zeros((1, 1), dtype=object),
                "CategoriesPresent": np.array([15, 20], dtype=np.uint8),
            }
        },
    )
    for source in (str(path), path.read_bytes()):
        mask = read_sbd_mask(source)
        assert mask.dtype == np.uint8 and np.array_equal(mask, seg)
    # loadmat's default struct layout (what the reference notebook used) reads the same values.
    assert np.array_equal(scipy.io.loadmat(path)["GTcls"]["Segmentation"][0][0], seg)


def test_read_sbd_mask_errors(tmp_path):
    with pytest.raises(ValueError, match="not a readable MATLAB"):
        read_sbd_mask(b"not a mat file at all")
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"GTinst": {"Segmentation": np.zeros((2, 2), np.uint8)}})
    with pytest.raises(ValueError, match="no 'GTcls'.*GTinst"):
        read_sbd_mask(buf.getvalue())
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"GTcls": {"Boundaries": np.zeros((2, 2), np.uint8)}})
    with pytest.raises(ValueError, match="no field 'Segmentation'"):
        read_sbd_mask(buf.getvalue())
    with pytest.raises(FileNotFoundError):
        read_sbd_mask(str(tmp_path / "missing.mat"))

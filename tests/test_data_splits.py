"""Split recipes: every recipe on small VOC/SBD id trees, missing roots, and the reference list."""

import os

import pytest

from data.splits import (
    RECIPES,
    MissingDatasetError,
    SampleRef,
    reference_custom_train_ids,
    resolve_recipe,
    train_aug_ids,
)
from data.voc import VocDevkit


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def _write_list(path, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


# VOC: train a,b,c (c not in SBD); val d,e (e not in SBD). SBD: train b,d,f,g ; val a,h.
VOC_TRAIN, VOC_VAL = ["2007_a", "2008_b", "2007_c"], ["2008_d", "2007_e"]
SBD_TRAIN, SBD_VAL = ["2008_b", "2008_d", "2009_f", "2009_g"], ["2007_a", "2010_h"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("splits")
    voc = base / "VOCdevkit" / "VOC2012"
    for i in VOC_TRAIN + VOC_VAL:
        _touch(voc / "JPEGImages" / f"{i}.jpg")
        _touch(voc / "SegmentationClass" / f"{i}.png")
    _write_list(voc / "ImageSets" / "Segmentation" / "train.txt", VOC_TRAIN)
    _write_list(voc / "ImageSets" / "Segmentation" / "val.txt", VOC_VAL)
    _write_list(voc / "ImageSets" / "Segmentation" / "trainval.txt", VOC_TRAIN + VOC_VAL)
    sbd = base / "benchmark_RELEASE" / "dataset"
    for i in SBD_TRAIN + SBD_VAL:
        _touch(sbd / "img" / f"{i}.jpg")
        _touch(sbd / "cls" / f"{i}.mat")
    _write_list(sbd / "train.txt", SBD_TRAIN)
    _write_list(sbd / "val.txt", SBD_VAL)
    return str(voc), str(sbd)


def _ids(refs):
    return [r.id for r in refs]


def test_voc_recipes(roots):
    voc_root, _ = roots
    assert _ids(resolve_recipe("voc_train", voc_root=voc_root)) == VOC_TRAIN
    assert _ids(resolve_recipe("voc_val", voc_root=voc_root)) == VOC_VAL
    refs = resolve_recipe("voc_trainval", voc_root=voc_root)
    assert _ids(refs) == VOC_TRAIN + VOC_VAL
    ref = refs[0]
    assert isinstance(ref, SampleRef) and ref.source == "voc"
    assert ref.image_path == os.path.join(voc_root, "JPEGImages", "2007_a.jpg")
    assert ref.mask_path == os.path.join(voc_root, "SegmentationClass", "2007_a.png")


def test_sbd_recipes(roots):
    _, sbd_root = roots
    refs = resolve_recipe("sbd_train", sbd_root=sbd_root)
    assert _ids(refs) == SBD_TRAIN and {r.source for r in refs} == {"sbd"}
    assert refs[0].mask_path == os.path.join(sbd_root, "cls", "2008_b.mat")
    assert _ids(resolve_recipe("sbd_val", sbd_root=os.path.dirname(sbd_root))) == SBD_VAL


def test_train_aug_prefers_voc_annotation(roots):
    voc_root, sbd_root = roots
    refs = resolve_recipe("train_aug", voc_root=voc_root, sbd_root=sbd_root)
    # (SBD train ∪ SBD val ∪ VOC train) − VOC val; d (SBD train, VOC val) is out.
    assert _ids(refs) == sorted(["2007_a", "2008_b", "2007_c", "2009_f", "2009_g", "2010_h"])
    source = {r.id: r.source for r in refs}
    assert source == {
        "2007_a": "voc",
        "2008_b": "voc",
        "2007_c": "voc",
        "2009_f": "sbd",
        "2009_g": "sbd",
        "2010_h": "sbd",
    }
    by_id = {r.id: r for r in refs}
    assert by_id["2008_b"].mask_path.endswith(os.path.join("SegmentationClass", "2008_b.png"))
    assert by_id["2009_f"].mask_path.endswith(os.path.join("cls", "2009_f.mat"))


def test_reference_custom_train_rule(roots):
    voc_root, sbd_root = roots
    refs = resolve_recipe("sbd_train_minus_voc_val", voc_root=voc_root, sbd_root=sbd_root)
    # VOC train ids absent from SBD first (sorted), then SBD train − VOC val in file order.
    assert _ids(refs) == ["2007_c", "2008_b", "2009_f", "2009_g"]
    assert [r.source for r in refs] == ["voc", "sbd", "sbd", "sbd"]


def test_rules_on_id_lists():
    # train_aug sizes on the full data: |SBD ∪ VOC trainval| = 12,031, minus 1,449 VOC val -> 10,582;
    # here the same arithmetic on a toy universe.
    sbd_train = [f"s{i}" for i in range(10)] + ["v1", "t1"]
    sbd_val = [f"w{i}" for i in range(4)] + ["v2"]
    voc_train, voc_val = ["t1", "t2"], ["v1", "v2", "v3"]
    aug = train_aug_ids(voc_train, voc_val, sbd_train, sbd_val)
    assert len(aug) == len(set(sbd_train + sbd_val + voc_train + voc_val)) - len(voc_val)
    assert not set(aug) & set(voc_val)
    ref = reference_custom_train_ids(voc_train, voc_val, sbd_train + ["s3"], sbd_val)
    assert ref == ["t2"] + [f"s{i}" for i in range(10)] + ["t1"]  # repeats dropped, VOC val out


def test_file_recipe_looks_up_voc_then_sbd(roots, tmp_path):
    voc_root, sbd_root = roots
    id_list = tmp_path / "ids.txt"
    id_list.write_text("2008_b\n2009_f\n2099_missing\n2008_b\n")
    refs = resolve_recipe(f"file:{id_list}", voc_root=voc_root, sbd_root=sbd_root)
    assert [(r.id, r.source) for r in refs] == [("2008_b", "voc"), ("2009_f", "sbd"), ("2099_missing", "voc")]
    # An id without files is returned (loading reports it as missing_image), not raised here.
    assert not os.path.exists(refs[2].image_path)
    # Either dataset alone works.
    assert [r.source for r in resolve_recipe(f"file:{id_list}", sbd_root=sbd_root)] == ["sbd"] * 3
    assert [r.source for r in resolve_recipe(f"file:{id_list}", voc_root=voc_root)] == ["voc"] * 3
    # DeepLab-ResNet style lines ("/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png") give the same ids.
    path_list = tmp_path / "train_aug.txt"
    path_list.write_text("/JPEGImages/2008_b.jpg /SegmentationClassAug/2008_b.png\n/JPEGImages/2009_f.jpg x\n")
    assert [(r.id, r.source) for r in resolve_recipe(f"file:{path_list}", voc_root=voc_root, sbd_root=sbd_root)] == [
        ("2008_b", "voc"),
        ("2009_f", "sbd"),
    ]
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        resolve_recipe(f"file:{tmp_path / 'nope.txt'}", voc_root=voc_root)
    with pytest.raises(MissingDatasetError, match="--voc-root and/or --sbd-root"):
        resolve_recipe(f"file:{id_list}")


@pytest.mark.parametrize(
    "recipe,flag",
    [
        ("voc_train", "--voc-root"),
        ("voc_val", "--voc-root"),
        ("voc_trainval", "--voc-root"),
        ("sbd_train", "--sbd-root"),
        ("sbd_val", "--sbd-root"),
        ("train_aug", "--sbd-root"),
        ("sbd_train_minus_voc_val", "--sbd-root"),
    ],
)
def test_missing_root_names_the_flag(roots, recipe, flag):
    voc_root, sbd_root = roots
    kwargs = {"voc_root": voc_root} if flag == "--sbd-root" else {"sbd_root": sbd_root}
    with pytest.raises(MissingDatasetError, match=f"{recipe}.*{flag}"):
        resolve_recipe(recipe, **kwargs)
    with pytest.raises(ValueError, match="pass --"):  # MissingDatasetError is a ValueError for CLI handling
        resolve_recipe(recipe)


def test_unknown_recipe_lists_choices():
    with pytest.raises(ValueError, match="unknown split recipe 'voc_test'.*train_aug"):
        resolve_recipe("voc_test", voc_root="x")
    assert set(RECIPES) >= {
        "voc_train",
        "voc_val",
        "voc_trainval",
        "sbd_train",
        "sbd_val",
        "train_aug",
        "sbd_train_minus_voc_val",
        "file:PATH",
    }


def test_reference_list_against_real_sample(custom_train_list, voc_sample_root):
    """What can be checked of the rule against the real custom_train.txt and the 19 real VOC ids."""
    lines = custom_train_list.read_text().split()
    assert len(lines) == 8252 and len(set(lines)) == 8233
    voc = VocDevkit(voc_sample_root)
    val, train = voc.split_ids("val"), voc.split_ids("train")
    assert not set(val) & set(lines), "the reference list must hold no VOC 2012 val id"
    assert set(train) <= set(lines), "VOC 2012 train ids (in SBD) belong to the reference list"
    # The first sorted run holds the VOC-only ids (2007_* and a few later ones) that the rule puts first.
    first_run = lines[: lines.index("2008_000003")]
    assert first_run == sorted(first_run) and len(first_run) == 330
    assert sum(i.startswith("2007_") for i in first_run) == 311
    assert not any(i.startswith("2007_") for i in lines[330:])
    # The rule run on these partial lists keeps the same properties.
    resolved = reference_custom_train_ids(train, val, sbd_train=lines[330:], sbd_val=[])
    assert not set(resolved) & set(val) and len(resolved) == len(set(lines[330:]))

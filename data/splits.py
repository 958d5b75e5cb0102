"""Split recipes: which (image, mask) files make up a named training or evaluation split.

A recipe resolves to a list of `SampleRef`s; reading and validating the files happens later in
`data.tfrecord.load_sample`, so an id whose files are missing is returned here and reported (and
counted) there instead of aborting the whole ingest.
"""

import logging
import posixpath
from typing import Iterable, List, Optional, Sequence

from data import fileio
from data.dataset import SampleRef

log = logging.getLogger(__name__)

RECIPES = {
    "voc_train": "VOC 2012 ImageSets/Segmentation/train.txt (1,464 ids)",
    "voc_val": "VOC 2012 ImageSets/Segmentation/val.txt (1,449 ids): the standard evaluation split",
    "voc_trainval": "VOC 2012 ImageSets/Segmentation/trainval.txt (2,913 ids)",
    "sbd_train": "SBD dataset/train.txt (8,498 ids, SBD annotations)",
    "sbd_val": "SBD dataset/val.txt (2,857 ids, SBD annotations)",
    "train_aug": "SBD train+val + VOC train - VOC val (10,582 ids); VOC annotation where both exist",
    "sbd_train_minus_voc_val": "the reference repo's custom_train.txt: VOC train ids absent from SBD, then "
    "SBD train - VOC val (SBD annotation first)",
    "file:PATH": "ids (or image paths) listed in PATH, one per line; looked up in VOC first, then SBD",
}


class MissingDatasetError(ValueError):
    """A recipe needs a dataset root that was not given."""


def _need(root, dataset, recipe):
    if root is None:
        flag = "--voc-root" if dataset == "VOC" else "--sbd-root"
        what = (
            "VOCdevkit/VOC2012 (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)"
            if dataset == "VOC"
            else "benchmark_RELEASE/dataset (img/, cls/, train.txt, val.txt)"
        )
        raise MissingDatasetError(
            f"split recipe {recipe!r} needs the {dataset} dataset, but no {dataset} root was "
            f"given: pass {flag} pointing at {what}"
        )


def _open(voc_root, sbd_root):
    from data.sbd import SbdDataset
    from data.voc import VocDevkit

    return (
        VocDevkit(voc_root) if voc_root is not None else None,
        SbdDataset(sbd_root) if sbd_root is not None else None,
    )


def _refs(dataset, source, ids):
    return [SampleRef(i, source, dataset.image_path(i), dataset.mask_path(i)) for i in ids]


def _unique(ids, where):
    """Ids in first-seen order without repeats (real lists have them: custom_train.txt repeats 19)."""
    seen, out = set(), []
    for i in ids:
        if i not in seen:
            seen.add(i)
            out.append(i)
    if len(out) != len(ids):
        log.warning("%s lists %d ids more than once; each is used once", where, len(ids) - len(out))
    return out


def _list_id(token):
    """Id of a list entry: the entry itself, or the file stem when it is an image path."""
    stem, ext = posixpath.splitext(posixpath.basename(token))
    return stem if "/" in token or ext.lower() in (".jpg", ".jpeg", ".png") else token


def _voc_or_sbd(voc, sbd, ids):
    """Refs for ids looked up in VOC first, then SBD; an id found in neither keeps the first dataset given
    so that loading reports it as a missing image instead of it vanishing here."""
    refs = []
    in_voc = voc.image_ids() if voc is not None and sbd is not None else set()
    in_sbd = sbd.image_ids() if voc is not None and sbd is not None else set()
    for i in ids:
        if voc is not None and (sbd is None or i in in_voc):
            refs.append(SampleRef(i, "voc", voc.image_path(i), voc.mask_path(i)))
        elif sbd is not None and (voc is None or i in in_sbd):
            refs.append(SampleRef(i, "sbd", sbd.image_path(i), sbd.mask_path(i)))
        else:
            refs.append(SampleRef(i, "voc", voc.image_path(i), voc.mask_path(i)))
    return refs


def train_aug_ids(
    voc_train: Iterable[str], voc_val: Iterable[str], sbd_train: Iterable[str], sbd_val: Iterable[str]
) -> List[str]:
    """Ids of the 'train_aug' split: (SBD train ∪ SBD val ∪ VOC train) − VOC val, sorted.

    On the full datasets this is the 10,582-image list used by DeepLab and most VOC papers.
    """
    val = set(voc_val)
    return sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - val)


def reference_custom_train_ids(
    voc_train: Iterable[str], voc_val: Iterable[str], sbd_train: Sequence[str], sbd_val: Iterable[str]
) -> List[str]:
    """Ids of the reference repo's dataset/custom_train.txt (sthalles/deeplab_v3), by rule.

    Rule: (VOC train − SBD train − SBD val), sorted, followed by (SBD train − VOC val) in SBD's
    file order, each id once.

    Evidence (the real file is in ../shared/seed-splits; full SBD lists were not available here):
    - 8,252 lines, 8,233 distinct ids (19 repeated), in three sorted runs of 330, 2,299 and 5,623
      lines; no VOC 2012 val id, as its README says ("designed to use the Pascal VOC 2012 set as a
      TESTING set").
    - Run 1 is 311 2007_* ids plus 19 later ones: VOC 2012 segmentation ids that SBD lacks (SBD was
      drawn from VOC 2011 Main trainval, which has no 2007 images). The reference notebook looks
      every id up in SBD first and printed "not found" for exactly such ids. No 2007_* id occurs
      after run 1.
    - Runs 2 and 3 are 2008-2011 ids and include VOC 2012 train ids (e.g. 2011_000003), so VOC train
      is not subtracted. Run 3 starts like VOC Main/train.txt (2008_000008, 2008_000015, ...), run 2
      like Main/val.txt: SBD re-split VOC 2011 Main train+val, and a train.txt kept in file order as
      two sorted runs explains both the run structure and the repeats across runs.
    - Sizes: 8,233 − 330 = 7,903 distinct SBD-train ids would mean 595 of SBD's 8,498 train ids are in
      VOC 2012 val, within the 1,449 val ids. Not checkable here without SBD's train.txt.
    Repeats are dropped (the reference trained 19 images twice per epoch).
    """
    sbd_all, val = set(sbd_train) | set(sbd_val), set(voc_val)
    voc_only = sorted(i for i in set(voc_train) if i not in sbd_all and i not in val)
    return _unique(voc_only + [i for i in sbd_train if i not in val], "SBD train.txt")


def resolve_recipe(name: str, voc_root: Optional[str] = None, sbd_root: Optional[str] = None) -> List[SampleRef]:
    """Resolves a split recipe (see RECIPES) to a list of SampleRef.

    Raises MissingDatasetError (a ValueError) naming the missing root and its flag when a
    recipe needs a dataset that was not given, ValueError for an unknown recipe and
    FileNotFoundError for a missing list file.
    """
    if name.startswith("file:"):
        path = name[len("file:") :]
        if voc_root is None and sbd_root is None:
            raise MissingDatasetError(
                f"split recipe {name!r} needs a dataset to look its ids up in: pass --voc-root and/or --sbd-root"
            )
        try:
            # Lines may also be paths, as in DeepLab-ResNet's train_aug.txt
            # ("/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png"): keep the file stem.
            ids = [_list_id(token) for token in fileio.read_id_list(path)]
        except FileNotFoundError:
            raise FileNotFoundError(f"id list {path} (from split recipe {name!r}) does not exist") from None
        voc, sbd = _open(voc_root, sbd_root)
        return _voc_or_sbd(voc, sbd, _unique(ids, path))

    if name not in RECIPES:
        raise ValueError(f"unknown split recipe {name!r}; choose one of {sorted(RECIPES)} or 'file:PATH'")
    needs_voc = name.startswith("voc_") or name in ("train_aug", "sbd_train_minus_voc_val")
    needs_sbd = name.startswith("sbd_") or name == "train_aug"
    if needs_voc:
        _need(voc_root, "VOC", name)
    if needs_sbd:
        _need(sbd_root, "SBD", name)
    voc, sbd = _open(voc_root if needs_voc else None, sbd_root if needs_sbd else None)

    if name.startswith("voc_"):
        split = name[len("voc_") :]
        return _refs(voc, "voc", _unique(voc.split_ids(split), voc.split_path(split)))
    if name in ("sbd_train", "sbd_val"):
        split = name[len("sbd_") :]
        return _refs(sbd, "sbd", _unique(sbd.split_ids(split), sbd.split_path(split)))

    voc_train, voc_val = voc.split_ids("train"), voc.split_ids("val")
    sbd_train, sbd_val = sbd.split_ids("train"), sbd.split_ids("val")
    if name == "train_aug":
        # VOC's own annotation wins where an id is in both: it is the official, finer one with
        # 255 bands on object outlines (SBD masks have none, and a few disagree with VOC's).
        voc_ids = set(voc_train)
        return [
            SampleRef(i, "voc", voc.image_path(i), voc.mask_path(i))
            if i in voc_ids
            else SampleRef(i, "sbd", sbd.image_path(i), sbd.mask_path(i))
            for i in train_aug_ids(voc_train, voc_val, sbd_train, sbd_val)
        ]
    # sbd_train_minus_voc_val: like the reference notebook, SBD's annotation for SBD ids, VOC's otherwise.
    sbd_ids = set(sbd_train) | set(sbd_val)
    return [
        SampleRef(i, "sbd", sbd.image_path(i), sbd.mask_path(i))
        if i in sbd_ids
        else SampleRef(i, "voc", voc.image_path(i), voc.mask_path(i))
        for i in reference_custom_train_ids(voc_train, voc_val, sbd_train, sbd_val)
    ]

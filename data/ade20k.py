"""ADE20K SceneParsing (MIT Scene Parsing Benchmark, ADEChallengeData2016): 150 classes.

    ROOT/images/{training,validation}/ADE_{train,val}_<n>.jpg
    ROOT/annotations/{training,validation}/ADE_{train,val}_<n>.png   (values 0..150; 0 = 'other', not scored)

Masks are mapped with `LabelMap.ade20k()`: value k in 1..150 -> train id k-1, 0 -> 255 (the usual shift by
one, `reduce_zero_label`). Splits may be named 'training'/'validation' or 'train'/'val'.
"""

from typing import Any, List, Set

from data import fileio
from data.label_map import LabelMap
from data.labelled import LabelledDataset

SPLIT_ALIASES = {"train": "training", "val": "validation"}


class Ade20kDataset(LabelledDataset):
    """Reader for ADEChallengeData2016 (local or gs://...); `root` may be that folder or the one holding it."""

    IMAGE_DIR = "images"
    MASK_DIR = "annotations"
    NAME = "ADE20K"
    ROOT_FLAG = "the ADE20K root"
    SOURCE = "ade20k"
    LAYOUT = (
        "ROOT/images/{training,validation}/<id>.jpg and ROOT/annotations/{training,validation}/<id>.png "
        "(ROOT = ADEChallengeData2016)"
    )

    def __init__(self, root: str, label_map: Any = None):
        self._where = {}  # id -> split folder
        super().__init__(root, label_map)

    def default_label_map(self) -> LabelMap:
        return LabelMap.ade20k()

    @classmethod
    def _resolve(cls, root):
        if not fileio.isdir(root):
            raise FileNotFoundError(f"ADE20K root {root!r} is not a directory; expected layout: {cls.LAYOUT}")
        for candidate in (root, fileio.join(root, "ADEChallengeData2016")):
            if fileio.isdir(fileio.join(candidate, cls.IMAGE_DIR)):
                masks = fileio.join(candidate, cls.MASK_DIR)
                if not fileio.isdir(masks):
                    raise FileNotFoundError(f"ADE20K folder {masks} does not exist; expected layout: {cls.LAYOUT}")
                return candidate
        raise FileNotFoundError(
            f"ADE20K folder {fileio.join(root, cls.IMAGE_DIR)} does not exist (nor "
            f"ADEChallengeData2016/{cls.IMAGE_DIR}); expected layout: {cls.LAYOUT}"
        )

    def available_splits(self) -> List[str]:
        return self._split_subfolders()

    def split_path(self, name: str) -> str:
        return fileio.join(self.root, self.IMAGE_DIR, SPLIT_ALIASES.get(name, name))

    def split_ids(self, name: str) -> List[str]:
        """Stems of images/<split>/*.jpg, sorted."""
        folder = SPLIT_ALIASES.get(name, name)
        split_dir = self._split_folder(name)
        ids = [n[:-4] for n in fileio.listdir(split_dir) if n.lower().endswith(".jpg")]
        for image_id in ids:
            self._where[image_id] = folder
        return ids

    def _split_of(self, image_id):
        if image_id in self._where:
            return self._where[image_id]
        if image_id.startswith("ADE_train_"):
            return "training"
        if image_id.startswith("ADE_val_"):
            return "validation"
        for split in self.available_splits():
            if image_id in self.split_ids(split):
                return split
        return "training"  # a missing id: loading reports the missing file

    def image_ids(self) -> Set[str]:
        for split in self.available_splits():
            self.split_ids(split)
        return set(self._where)

    def image_path(self, image_id: str) -> str:
        return fileio.join(self.root, self.IMAGE_DIR, self._split_of(image_id), f"{image_id}.jpg")

    def mask_path(self, image_id: str) -> str:
        return fileio.join(self.root, self.MASK_DIR, self._split_of(image_id), f"{image_id}.png")

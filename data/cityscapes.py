"""Cityscapes (fine annotations): 2048x1024 street scenes, 19 train classes.

    ROOT/leftImg8bit/{train,val,test}/<city>/<id>_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/<city>/<id>_gtFine_labelIds.png     (labelIds 0..33, -1 stored as 255)

Masks are mapped with `LabelMap.cityscapes()` (labelIds -> the 19 trainIds, every other id -> 255), as
cityscapesScripts' createTrainIdLabelImgs.py does. Ids are the file stems without the suffix
('aachen_000000_000019'), unique across splits.
"""

from typing import Any, List, Set

from data import fileio
from data.label_map import LabelMap
from data.labelled import LabelledDataset

IMAGE_SUFFIX = "_leftImg8bit.png"


class CityscapesDataset(LabelledDataset):
    """Reader for a Cityscapes tree (local or gs://...). `annotation` may be 'gtCoarse' for the coarse set."""

    IMAGE_DIR = "leftImg8bit"
    MASK_DIR = "gtFine"
    NAME = "Cityscapes"
    ROOT_FLAG = "the Cityscapes root"
    SOURCE = "cityscapes"
    LAYOUT = (
        "ROOT/leftImg8bit/{train,val,test}/<city>/<id>_leftImg8bit.png and "
        "ROOT/gtFine/{train,val,test}/<city>/<id>_gtFine_labelIds.png"
    )
    FOLDER_HINT = " (download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip and unpack both into the root)"

    def __init__(self, root: str, label_map: Any = None, annotation: str = "gtFine"):
        self.MASK_DIR = annotation
        self._where = {}  # id -> (split, city), filled as splits are listed
        self._listed = set()
        super().__init__(root, label_map)

    def default_label_map(self) -> LabelMap:
        return LabelMap.cityscapes()

    def available_splits(self) -> List[str]:
        return self._split_subfolders()

    def split_path(self, name: str) -> str:
        return fileio.join(self.root, self.IMAGE_DIR, name)

    def split_ids(self, name: str) -> List[str]:
        """Ids of the images in leftImg8bit/<name>/<city>/, sorted by city then id (one listing per city)."""
        split_dir = self._split_folder(name)
        ids = []
        for city in fileio.listdir(split_dir):
            city_dir = fileio.join(split_dir, city)
            if not fileio.isdir(city_dir):
                continue
            for file_name in fileio.listdir(city_dir):
                if file_name.endswith(IMAGE_SUFFIX):
                    image_id = file_name[: -len(IMAGE_SUFFIX)]
                    self._where[image_id] = (name, city)
                    ids.append(image_id)
        self._listed.add(name)
        return ids

    def _locate(self, image_id):
        if image_id not in self._where:
            for split in self.available_splits():
                if split not in self._listed:
                    self.split_ids(split)
                if image_id in self._where:
                    break
        # Unknown ids get a path in train/<city>/ so that loading reports the missing file.
        return self._where.get(image_id, ("train", image_id.split("_")[0]))

    def image_ids(self) -> Set[str]:
        for split in self.available_splits():
            if split not in self._listed:
                self.split_ids(split)
        return set(self._where)

    def image_path(self, image_id: str) -> str:
        split, city = self._locate(image_id)
        return fileio.join(self.root, self.IMAGE_DIR, split, city, f"{image_id}{IMAGE_SUFFIX}")

    def mask_path(self, image_id: str) -> str:
        split, city = self._locate(image_id)
        return fileio.join(self.root, self.MASK_DIR, split, city, f"{image_id}_{self.MASK_DIR}_labelIds.png")

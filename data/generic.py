"""Your own dataset in a plain layout: an images folder, a masks folder and split lists.

    ROOT/images/<id>.jpg (or .jpeg / .png)
    ROOT/masks/<id>.png          class ids ('P' palette indices or 'L' values, 16-bit allowed) or RGB colours
    ROOT/splits/<split>.txt      ids, one per line (train.txt, val.txt, ...)
    ROOT/label_map.json          optional: used when no label map is given (else VOC)

Single-channel masks are checked against (or remapped by) the label map; RGB colour masks are converted
with its palette (`data.label_map.LabelMap.encode_mask`).
"""

from typing import Any, List, Optional, Set

from data import fileio
from data.dataset import LABEL_MAP_FILE
from data.labelled import LabelledDataset

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def own_label_map(root: str) -> Optional[str]:
    """ROOT/label_map.json of a generic dataset when it has one, else None (the reader then uses VOC)."""
    path = fileio.join(str(root), LABEL_MAP_FILE)
    return path if fileio.exists(path) else None


class GenericDataset(LabelledDataset):
    """Reader for the layout above (local or gs://...); folder names can be changed."""

    NAME = "generic dataset"
    ROOT_FLAG = "the dataset root"
    SOURCE = "generic"

    def __init__(
        self,
        root: str,
        images_dir: str = "images",
        masks_dir: str = "masks",
        splits_dir: str = "splits",
        label_map: Any = None,
    ):
        self.IMAGE_DIR, self.MASK_DIR, self.LIST_DIR = images_dir, masks_dir, splits_dir
        self.LAYOUT = (
            f"ROOT/{images_dir}/<id>.jpg|.png, ROOT/{masks_dir}/<id>.png (class ids or RGB colours), "
            f"ROOT/{splits_dir}/<split>.txt (ids, one per line)"
        )
        self._image_files = None
        super().__init__(root, label_map)

    def default_label_map(self) -> Optional[str]:
        return own_label_map(self.root)

    def available_splits(self) -> List[str]:
        list_dir = fileio.join(self.root, self.LIST_DIR)
        if not fileio.isdir(list_dir):
            return []
        return [n[:-4] for n in fileio.listdir(list_dir) if n.endswith(".txt")]

    def split_ids(self, name: str) -> List[str]:
        """Ids of `<splits_dir>/<name>.txt`; 'all' without an all.txt means every image, sorted."""
        if name == "all" and not fileio.exists(self.split_path(name)):
            return sorted(self._images())
        return super().split_ids(name)

    def _images(self):
        """{id: file name} of the images folder (one listing, cached)."""
        if self._image_files is None:
            files = {}
            for name in fileio.listdir(fileio.join(self.root, self.IMAGE_DIR)):
                stem, dot, ext = name.rpartition(".")
                if dot and f".{ext.lower()}" in IMAGE_EXTS:
                    files.setdefault(stem, name)
            self._image_files = files
        return self._image_files

    def image_ids(self) -> Set[str]:
        return set(self._images())

    def image_path(self, image_id):
        """The image of `image_id` whatever its extension; <id>.jpg when there is none (reported missing on load)."""
        name = self._images().get(image_id, f"{image_id}.jpg")
        return fileio.join(self.root, self.IMAGE_DIR, name)

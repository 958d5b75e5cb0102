"""The bottom of the dataset readers: the shared layout of image/mask datasets (one image folder, one mask folder,
id lists), the reference to one listed sample and the reading of a mask file as stored.

Subclasses name their folders and the error hint; the readers then agree on every method. This module imports no
reader and no label map: data/labelled.py adds label maps (the base of the generic, Cityscapes and ADE20K readers),
data/layouts.py opens a reader by layout name.
"""

import collections
from typing import Set

import numpy as np

from data import fileio

# A generic-layout dataset's own label map, at its root (data/generic.py; data.synthetic writes one).
LABEL_MAP_FILE = "label_map.json"

SampleRef = collections.namedtuple("SampleRef", ["id", "source", "image_path", "mask_path"])
SampleRef.__doc__ = "One listed sample: id, source ('voc', 'sbd', or a reader's SOURCE), image path, mask path."


class ImageMaskDataset:
    """Base of `data.voc.VocDevkit` and `data.sbd.SbdDataset` (local or gs://... roots).

    Subclasses set `IMAGE_DIR`, `MASK_DIR`, `MASK_EXT`, `LIST_DIR` (folder of the `<split>.txt`
    lists relative to the root, "" for the root itself), `NAME` and `ROOT_FLAG` (used in errors),
    implement `_resolve(root)` and may override `_missing_split_hint()`.
    """

    IMAGE_DIR = None
    MASK_DIR = None
    MASK_EXT = None
    LIST_DIR = ""
    NAME = None
    ROOT_FLAG = None

    def __init__(self, root: str):
        self.given_root = str(root)
        self.root = self._resolve(str(root))

    @classmethod
    def _resolve(cls, root):
        raise NotImplementedError

    def _missing_split_hint(self):
        """Text in parentheses after 'split list ... does not exist': what the user can pick from."""
        raise NotImplementedError

    def split_path(self, name: str) -> str:
        list_dir = [self.LIST_DIR] if self.LIST_DIR else []
        return fileio.join(self.root, *list_dir, f"{name}.txt")

    def split_ids(self, name: str) -> list:
        """Ids listed in the split list `<name>.txt` (see `split_path`), in file order."""
        path = self.split_path(name)
        try:
            return fileio.read_id_list(path)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{self.NAME} split list {path} does not exist ({self._missing_split_hint()}); "
                f"check {self.ROOT_FLAG} and the split name"
            ) from None

    def image_path(self, image_id: str) -> str:
        return fileio.join(self.root, self.IMAGE_DIR, f"{image_id}.jpg")

    def mask_path(self, image_id: str) -> str:
        return fileio.join(self.root, self.MASK_DIR, f"{image_id}{self.MASK_EXT}")

    def has_image(self, image_id: str) -> bool:
        return fileio.exists(self.image_path(image_id))

    def image_ids(self) -> Set[str]:
        """Ids of all images present (one directory listing: cheaper than many exists() calls on gs://)."""
        image_dir = fileio.join(self.root, self.IMAGE_DIR)
        if not fileio.isdir(image_dir):
            return set()
        return {name[:-4] for name in fileio.listdir(image_dir) if name.endswith(".jpg")}

    def __repr__(self):
        return f"{type(self).__name__}({self.root!r})"


def read_raw_mask(path: str) -> np.ndarray:
    """Pixel values of a mask file as stored: np [H, W] ids (palette 'P' indices, 'L', 16-bit 'I') or
    uint8 [H, W, 3] colours (RGB/RGBA PNGs, alpha dropped). Raises FileNotFoundError / ValueError naming `path`."""
    import io

    from PIL import Image

    try:
        data = fileio.read_bytes(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"mask file {path} does not exist") from None
    try:
        mask = Image.open(io.BytesIO(data))
        mask.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        raise ValueError(f"{path}: cannot decode the mask ({e})") from e
    if mask.mode in ("P", "L"):
        return np.asarray(mask, dtype=np.uint8)  # palette indices ARE the ids (VOC convention)
    if mask.mode in ("I", "I;16", "I;16B"):
        return np.asarray(mask).astype(np.int64)
    if mask.mode in ("RGB", "RGBA"):
        return np.asarray(mask)[..., :3]
    raise ValueError(f"{path}: mask mode {mask.mode} is neither class ids ('P', 'L', 16-bit) nor RGB colours")

"""Shared layout of the image/mask datasets (VOCdevkit, SBD): one image folder, one mask folder, id lists.

Subclasses name their folders and the error hint; the readers then agree on every method.
"""
from data import fileio


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

    def __init__(self, root):
        self.given_root = str(root)
        self.root = self._resolve(str(root))

    @classmethod
    def _resolve(cls, root):
        raise NotImplementedError

    def _missing_split_hint(self):
        """Text in parentheses after 'split list ... does not exist': what the user can pick from."""
        raise NotImplementedError

    def split_path(self, name):
        list_dir = [self.LIST_DIR] if self.LIST_DIR else []
        return fileio.join(self.root, *list_dir, f"{name}.txt")

    def split_ids(self, name):
        """Ids listed in the split list `<name>.txt` (see `split_path`), in file order."""
        path = self.split_path(name)
        try:
            return fileio.read_id_list(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.NAME} split list {path} does not exist ({self._missing_split_hint()}); "
                                    f"check {self.ROOT_FLAG} and the split name") from None

    def image_path(self, image_id):
        return fileio.join(self.root, self.IMAGE_DIR, f"{image_id}.jpg")

    def mask_path(self, image_id):
        return fileio.join(self.root, self.MASK_DIR, f"{image_id}{self.MASK_EXT}")

    def has_image(self, image_id):
        return fileio.exists(self.image_path(image_id))

    def image_ids(self):
        """Ids of all images present (one directory listing: cheaper than many exists() calls on gs://)."""
        image_dir = fileio.join(self.root, self.IMAGE_DIR)
        if not fileio.isdir(image_dir):
            return set()
        return {name[:-4] for name in fileio.listdir(image_dir) if name.endswith(".jpg")}

    def __repr__(self):
        return f"{type(self).__name__}({self.root!r})"

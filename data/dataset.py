"""Shared layout of the image/mask datasets (VOCdevkit, SBD): one image folder, one mask folder, id lists.

Subclasses name their folders and the error hint; the readers then agree on every method.
"""

from data import fileio

# A generic-layout dataset's own label map, at its root (data/generic.py; data.synthetic writes one).
LABEL_MAP_FILE = "label_map.json"


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
            raise FileNotFoundError(
                f"{self.NAME} split list {path} does not exist ({self._missing_split_hint()}); "
                f"check {self.ROOT_FLAG} and the split name"
            ) from None

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


def read_raw_mask(path):
    """Pixel values of a mask file as stored: np [H, W] ids (palette 'P' indices, 'L', 16-bit 'I') or
    uint8 [H, W, 3] colours (RGB/RGBA PNGs, alpha dropped). Raises FileNotFoundError / ValueError naming `path`."""
    import io

    import numpy as np
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


# The layouts `open_dataset` reads (VocExampleGen's `layout`, `deeplab run|ingest --layout`), besides VOC/SBD.
DATASET_LAYOUTS = ("generic", "cityscapes", "ade20k")


def open_dataset(layout, root, label_map=None):
    """The reader of a dataset `layout` (DATASET_LAYOUTS) at `root`: a LabelledDataset (FileNotFoundError names
    the missing folder and the layout expected)."""
    from data.ade20k import Ade20kDataset
    from data.cityscapes import CityscapesDataset
    from data.generic import GenericDataset

    readers = {"generic": GenericDataset, "cityscapes": CityscapesDataset, "ade20k": Ade20kDataset}
    if layout not in readers:
        raise ValueError(f"unknown dataset layout {layout!r}; choose one of {list(readers)} (or voc)")
    return readers[layout](root, label_map=label_map)


def layout_label_map(layout, root):
    """A dataset layout's own label map, without opening a reader (compiling a pipeline must not need the data):
    generic: ROOT/label_map.json when present; cityscapes, ade20k: the built-in map's name; else None (VOC)."""
    if layout == "generic" and root:
        path = fileio.join(str(root), LABEL_MAP_FILE)
        return path if fileio.exists(path) else None
    if layout in ("cityscapes", "ade20k"):
        return layout
    return None


class LabelledDataset(ImageMaskDataset):
    """Base of the readers of datasets with their own label map (`data.generic`, `data.cityscapes`,
    `data.ade20k`): `ImageMaskDataset`'s methods plus a `data.label_map.LabelMap` that turns masks into
    train ids, and generators that hold one image at a time.

    Subclasses also set `SOURCE` (the `SampleRef.source` of their samples) and `LAYOUT` (the expected
    folder layout, quoted in errors), and implement `split_ids`, `image_path`, `mask_path`. The default
    `_resolve` wants the root to hold `IMAGE_DIR` and `MASK_DIR`; `FOLDER_HINT` follows its missing-folder error.
    """

    MASK_EXT = ".png"
    SOURCE = None
    LAYOUT = None
    FOLDER_HINT = ""

    def __init__(self, root, label_map=None):
        from data.label_map import LabelMap

        super().__init__(root)
        self.label_map = LabelMap.resolve(label_map if label_map is not None else self.default_label_map())

    def _resolve(self, root):
        if not fileio.isdir(root):
            raise FileNotFoundError(f"{self.NAME} root {root!r} is not a directory; expected layout: {self.LAYOUT}")
        for folder in (self.IMAGE_DIR, self.MASK_DIR):
            path = fileio.join(root, folder)
            if not fileio.isdir(path):
                raise FileNotFoundError(
                    f"{self.NAME} folder {path} does not exist; expected layout: {self.LAYOUT}{self.FOLDER_HINT}"
                )
        return root

    def default_label_map(self):
        return None  # LabelMap.resolve(None) is VOC

    def _missing_split_hint(self):
        return f"available: {self.available_splits()}"

    def available_splits(self):
        raise NotImplementedError

    def _split_subfolders(self):
        """Splits of the layouts with one folder per split under `IMAGE_DIR` (Cityscapes, ADE20K)."""
        image_dir = fileio.join(self.root, self.IMAGE_DIR)
        return [s for s in fileio.listdir(image_dir) if fileio.isdir(fileio.join(image_dir, s))]

    def _split_folder(self, name):
        """`split_path(name)` of a folder-per-split layout; FileNotFoundError listing the splits if it is missing."""
        split_dir = self.split_path(name)
        if not fileio.isdir(split_dir):
            raise FileNotFoundError(
                f"{self.NAME} split folder {split_dir} does not exist (available: "
                f"{self.available_splits()}); expected layout: {self.LAYOUT}"
            )
        return split_dir

    def iter_refs(self, split):
        """`data.splits.SampleRef`s of a split, lazily (paths only; nothing is read)."""
        from data.splits import SampleRef

        for image_id in self.split_ids(split):
            yield SampleRef(image_id, self.SOURCE, self.image_path(image_id), self.mask_path(image_id))

    def refs(self, split):
        return list(self.iter_refs(split))

    def load_raw_mask(self, image_id):
        """The mask file's values as stored (see `read_raw_mask`)."""
        return read_raw_mask(self.mask_path(image_id))

    def load_mask(self, image_id):
        """Train ids uint8 [H, W] (ignore = label_map.ignore_label); MaskValueError names the file and values."""
        path = self.mask_path(image_id)
        return self.label_map.encode_mask(read_raw_mask(path), source=path)

    def load_image(self, image_id):
        """uint8 [H, W, 3] RGB pixels of the image."""
        import io

        import numpy as np
        from PIL import Image

        path = self.image_path(image_id)
        try:
            data = fileio.read_bytes(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"image file {path} does not exist") from None
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))

    def iter_samples(self, split):
        """(SampleRef, image uint8 [H, W, 3], train ids uint8 [H, W]) one at a time: a generator, so only one
        decoded image is alive at once however large the split or its images (Cityscapes: 2048x1024)."""
        for ref in self.iter_refs(split):
            yield ref, self.load_image(ref.id), self.load_mask(ref.id)

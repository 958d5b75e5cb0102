"""`LabelledDataset`: the base of the readers of datasets with their own label map (data/generic.py,
data/cityscapes.py, data/ade20k.py), on the shared layout of data/dataset.py."""

from typing import Any, Iterator, List, Tuple

import numpy as np

from data import fileio
from data.dataset import ImageMaskDataset, SampleRef, read_raw_mask
from data.label_map import LabelMap


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

    def __init__(self, root: str, label_map: Any = None):
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

    def default_label_map(self) -> Any:
        return None  # LabelMap.resolve(None) is VOC

    def _missing_split_hint(self):
        return f"available: {self.available_splits()}"

    def available_splits(self) -> List[str]:
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

    def iter_refs(self, split: str) -> Iterator[SampleRef]:
        """`SampleRef`s of a split, lazily (paths only; nothing is read)."""
        for image_id in self.split_ids(split):
            yield SampleRef(image_id, self.SOURCE, self.image_path(image_id), self.mask_path(image_id))

    def refs(self, split: str) -> List[SampleRef]:
        return list(self.iter_refs(split))

    def load_raw_mask(self, image_id: str) -> np.ndarray:
        """The mask file's values as stored (see `read_raw_mask`)."""
        return read_raw_mask(self.mask_path(image_id))

    def load_mask(self, image_id: str) -> np.ndarray:
        """Train ids uint8 [H, W] (ignore = label_map.ignore_label); MaskValueError names the file and values."""
        path = self.mask_path(image_id)
        return self.label_map.encode_mask(read_raw_mask(path), source=path)

    def load_image(self, image_id: str) -> np.ndarray:
        """uint8 [H, W, 3] RGB pixels of the image."""
        import io

        from PIL import Image

        path = self.image_path(image_id)
        try:
            data = fileio.read_bytes(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"image file {path} does not exist") from None
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))

    def iter_samples(self, split: str) -> Iterator[Tuple[SampleRef, np.ndarray, np.ndarray]]:
        """(SampleRef, image uint8 [H, W, 3], train ids uint8 [H, W]) one at a time: a generator, so only one
        decoded image is alive at once however large the split or its images (Cityscapes: 2048x1024)."""
        for ref in self.iter_refs(split):
            yield ref, self.load_image(ref.id), self.load_mask(ref.id)

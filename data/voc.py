"""Pascal VOC 2012: class names, colour map and the VOCdevkit directory layout.

These constants are the single source of truth for the project (see docs/ARCHITECTURE.md).
"""

import functools
from typing import List

import numpy as np

from data import fileio
from data.dataset import ImageMaskDataset

NUM_CLASSES = 21
IGNORE_LABEL = 255

# Index = class id, as in the VOC 2012 devkit.
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
assert len(VOC_CLASSES) == NUM_CLASSES


@functools.lru_cache(maxsize=1)
def _palette():
    # The devkit's VOClabelcolormap.m: the bits of the class id are spread over the high bits
    # of R, G and B, so neighbouring ids get very different colours. Id 255 -> (224, 224, 192).
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[label] = (r, g, b)
    palette.setflags(write=False)
    return palette


def voc_palette() -> np.ndarray:
    """The standard VOC colour map: uint8 [256, 3], row i = RGB colour of label i (255 = boundary)."""
    return _palette().copy()


class VocDevkit(ImageMaskDataset):
    """Reader for a VOCdevkit tree (local or gs://...).

    `root` may be the `VOC2012` folder itself (holding JPEGImages/, SegmentationClass/,
    ImageSets/Segmentation/), the `VOCdevkit` folder above it, or the folder holding `VOCdevkit`.
    Where a folder holds several VOC years, `VOC2012` is chosen; otherwise the choice must be
    unique or a ValueError lists the candidates.
    """

    IMAGE_DIR = "JPEGImages"
    MASK_DIR = "SegmentationClass"
    MASK_EXT = ".png"
    LIST_DIR = "ImageSets/Segmentation"
    NAME = "VOC"
    ROOT_FLAG = "--voc-root"

    @classmethod
    def _is_voc_dir(cls, path):
        return fileio.isdir(fileio.join(path, cls.IMAGE_DIR)) or fileio.isdir(fileio.join(path, "ImageSets"))

    @classmethod
    def _resolve(cls, root):
        if not fileio.isdir(root):
            raise FileNotFoundError(
                f"VOC root {root!r} is not a directory: pass --voc-root pointing at "
                "VOCdevkit/VOC2012 (the folder holding JPEGImages/ and SegmentationClass/)"
            )
        if cls._is_voc_dir(root):
            return root
        for parent in (root, fileio.join(root, "VOCdevkit")):
            if not fileio.isdir(parent):
                continue
            candidates = [name for name in fileio.listdir(parent) if cls._is_voc_dir(fileio.join(parent, name))]
            if "VOC2012" in candidates:
                return fileio.join(parent, "VOC2012")
            if len(candidates) == 1:
                return fileio.join(parent, candidates[0])
            if len(candidates) > 1:
                raise ValueError(
                    f"VOC root {root!r} is ambiguous: it holds {candidates}; pass one of them with --voc-root"
                )
        raise FileNotFoundError(
            f"no VOC dataset under {root!r}: expected JPEGImages/ and ImageSets/Segmentation/ "
            "there, in VOC2012/ or in VOCdevkit/VOC2012/; pass --voc-root pointing at "
            "VOCdevkit/VOC2012"
        )

    def _missing_split_hint(self):
        return f"available: {self.available_splits()}"

    def available_splits(self) -> List[str]:
        """Names of the id lists in ImageSets/Segmentation (e.g. ['train', 'trainval', 'val'])."""
        list_dir = fileio.join(self.root, self.LIST_DIR)
        if not fileio.isdir(list_dir):
            return []
        return [n[:-4] for n in fileio.listdir(list_dir) if n.endswith(".txt")]

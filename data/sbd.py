"""Semantic Boundaries Dataset (Hariharan et al. 2011), the "augmented" VOC training data.

Layout (benchmark_RELEASE/dataset/): img/<id>.jpg, cls/<id>.mat (MATLAB struct `GTcls` whose
field `Segmentation` holds uint8 class ids 0..20; SBD has no 255 boundary bands), train.txt
(8,498 ids) and val.txt (2,857 ids).
"""

import io
from typing import Union

import numpy as np

from data import fileio
from data.dataset import ImageMaskDataset


class SbdDataset(ImageMaskDataset):
    """Reader for an SBD tree (local or gs://...); same methods as `data.voc.VocDevkit`.

    `root` may be the `dataset/` folder itself or the folder that contains it
    (e.g. `benchmark_RELEASE/`).
    """

    IMAGE_DIR = "img"
    MASK_DIR = "cls"
    MASK_EXT = ".mat"
    NAME = "SBD"
    ROOT_FLAG = "--sbd-root"

    @classmethod
    def _resolve(cls, root):
        for candidate in (root, fileio.join(root, "dataset")):
            if fileio.isdir(fileio.join(candidate, cls.MASK_DIR)) or fileio.isdir(
                fileio.join(candidate, cls.IMAGE_DIR)
            ):
                return candidate
        raise FileNotFoundError(
            f"no SBD dataset under {root!r}: expected img/ and cls/ there or in dataset/; "
            "pass --sbd-root pointing at benchmark_RELEASE (or its dataset/ folder)"
        )

    def _missing_split_hint(self):
        return "SBD ships train.txt and val.txt"


def read_sbd_mask(path_or_bytes: Union[str, bytes, bytearray, memoryview]) -> np.ndarray:
    """Class-id mask of an SBD cls/*.mat file: np.uint8 [H, W].

    Accepts a path (local or remote) or the file's bytes. Raises ValueError naming the problem
    when the file is not a MATLAB file or lacks GTcls.Segmentation.
    """
    import scipy.io  # deferred: scipy.io is only needed for SBD

    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data, name = bytes(path_or_bytes), "<bytes>"
    else:
        data, name = fileio.read_bytes(path_or_bytes), str(path_or_bytes)
    try:
        mat = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True, struct_as_record=False)
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... for bad files
        raise ValueError(f"{name} is not a readable MATLAB .mat file ({e})") from e
    if "GTcls" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{name} has no 'GTcls' struct (variables: {keys}); SBD class masks are in dataset/cls/")
    segmentation = getattr(mat["GTcls"], "Segmentation", None)
    if segmentation is None:
        raise ValueError(f"{name}: struct GTcls has no field 'Segmentation'")
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2:
        raise ValueError(f"{name}: GTcls.Segmentation has shape {segmentation.shape}, expected [H, W]")
    if segmentation.size and (segmentation.min() < 0 or segmentation.max() > 255):
        raise ValueError(
            f"{name}: GTcls.Segmentation values {segmentation.min()}..{segmentation.max()} do not fit class ids 0..255"
        )
    return segmentation.astype(np.uint8)

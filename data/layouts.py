"""Opening a dataset by its layout name (VocExampleGen's `layout`, `deeplab run|ingest --layout`): the registry of
the readers with their own label map, one level above them, so the readers' base modules (data/dataset.py,
data/labelled.py) import no reader. VOC and SBD are read through the split recipes of data/splits.py instead.
"""

from typing import Any, Optional

from data.ade20k import Ade20kDataset
from data.cityscapes import CityscapesDataset
from data.generic import GenericDataset, own_label_map
from data.labelled import LabelledDataset

# layout name -> reader class (a LabelledDataset).
READERS = {"generic": GenericDataset, "cityscapes": CityscapesDataset, "ade20k": Ade20kDataset}
# The layouts `open_dataset` reads, besides VOC/SBD.
DATASET_LAYOUTS = tuple(READERS)


def open_dataset(layout: str, root: str, label_map: Any = None) -> LabelledDataset:
    """The reader of a dataset `layout` (DATASET_LAYOUTS) at `root` (FileNotFoundError names the missing folder
    and the layout expected)."""
    if layout not in READERS:
        raise ValueError(f"unknown dataset layout {layout!r}; choose one of {list(READERS)} (or voc)")
    return READERS[layout](root, label_map=label_map)


def layout_label_map(layout: Optional[str], root: Optional[str]) -> Optional[str]:
    """A dataset layout's own label map, without opening a reader (compiling a pipeline must not need the data):
    generic: ROOT/label_map.json when present; cityscapes, ade20k: the built-in map's name; else None (VOC)."""
    if layout == "generic" and root:
        return own_label_map(root)
    if layout in ("cityscapes", "ade20k"):
        return layout
    return None

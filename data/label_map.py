"""Label maps: which classes a dataset has, how its raw masks become train ids, and their display colours.

A `LabelMap` describes one dataset: class names (index = train id, ids 0..N-1 contiguous), the ignore label
(default 255), an optional palette (RGB colour -> train id, for RGB colour masks; also the display colours)
and an optional `id_remap` (source id -> train id, e.g. Cityscapes labelIds -> trainIds; source ids not in
the remap become the ignore label). `LabelMap.voc()` is the default; `cityscapes()` and `ade20k()` are
built in; others load from JSON (or YAML where PyYAML is installed):

    {"name": "roads",
     "ignore_label": 255,
     "classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                 {"id": 1, "name": "road", "color": [128, 64, 128]}],
     "palette": [{"color": [255, 255, 255], "id": 255}],
     "id_remap": {"7": 1, "0": 0}}

`classes` may also be a plain list of names (id = position). `palette` lists extra colours (beyond the
classes' own `color`), e.g. the colour of ignored pixels. `encode_mask` turns a raw mask into train ids.
"""

import dataclasses
import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

DEFAULT_IGNORE_LABEL = 255


class LabelMapError(ValueError):
    """An invalid label map: the message names the file (or '<LabelMap>') and the field."""


class MaskValueError(ValueError):
    """A mask value (class id or RGB colour) that the label map does not know.

    `reason` is the `data.tfrecord.REASONS` code the ingest would count it under ('label_out_of_range');
    `path` the mask file when known; `values` the offending ids or (r, g, b) colours.
    """

    reason = "label_out_of_range"

    def __init__(self, message, path=None, values=()):
        super().__init__(message)
        self.path = path
        self.values = tuple(values)


def _rgb(value, where):
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        raise LabelMapError(f"{where}: colour {value!r} is not an [R, G, B] triple of integers 0..255")
    return tuple(int(v) for v in value)


def _int(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise LabelMapError(f"{where}: {value!r} is not an integer")
    return int(value)


@dataclasses.dataclass(frozen=True)
class LabelMap:
    """A dataset's classes. Construct with `names` (index = train id) and optionally:

    ignore_label: train id of pixels that are not scored (0..255, not a class id).
    palette: ((r, g, b), train_id) pairs (a dict {(r, g, b): id} is accepted): RGB colour masks are converted
        with it, and the first colour of each id is its display colour. Ids may be class ids or the ignore label.
    id_remap: (source_id, train_id) pairs (or a dict): applied to single-channel masks; source ids not listed
        become the ignore label. Without it, mask values must already be class ids or the ignore label.
    name: a label for messages and summaries.
    """

    names: tuple
    ignore_label: int = DEFAULT_IGNORE_LABEL
    palette: tuple = None
    id_remap: tuple = None
    name: str = "custom"

    def __post_init__(self):
        if isinstance(self.palette, dict):
            object.__setattr__(self, "palette", tuple(self.palette.items()))
        if isinstance(self.id_remap, dict):
            object.__setattr__(self, "id_remap", tuple(self.id_remap.items()))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if self.palette is not None:
            object.__setattr__(self, "palette", tuple((tuple(int(c) for c in rgb), int(i)) for rgb, i in self.palette))
        if self.id_remap is not None:
            object.__setattr__(self, "id_remap", tuple((int(s), int(t)) for s, t in self.id_remap))
        self.validate("<LabelMap>")

    # -- validation ---------------------------------------------------------------------------------------------

    def validate(self, source: str = "<LabelMap>") -> "LabelMap":
        """Raises LabelMapError naming `source` and the field for every inconsistency; returns self."""
        n = len(self.names)
        if n == 0:
            raise LabelMapError(f"{source}: field 'classes': no classes")
        if n > 255:
            raise LabelMapError(
                f"{source}: field 'classes': {n} classes do not fit uint8 train ids with an ignore label (at most 255)"
            )
        if len(set(self.names)) != n:
            dupes = sorted({x for x in self.names if self.names.count(x) > 1})
            raise LabelMapError(f"{source}: field 'classes': duplicate class names {dupes}")
        if (
            isinstance(self.ignore_label, bool)
            or not isinstance(self.ignore_label, (int, np.integer))
            or not 0 <= self.ignore_label <= 255
        ):
            raise LabelMapError(f"{source}: field 'ignore_label': {self.ignore_label!r} is not an integer 0..255")
        if self.ignore_label < n:
            raise LabelMapError(
                f"{source}: field 'ignore_label': {self.ignore_label} collides with class id "
                f"{self.ignore_label} ({self.names[self.ignore_label]!r}); class ids are 0..{n - 1}"
            )
        if self.palette is not None:
            seen = {}
            for k, (rgb, train_id) in enumerate(self.palette):
                _rgb(list(rgb), f"{source}: field 'palette[{k}]'")
                if not (0 <= train_id < n or train_id == self.ignore_label):
                    raise LabelMapError(
                        f"{source}: field 'palette[{k}]': colour {list(rgb)} maps to id {train_id}, "
                        f"which is neither a class id 0..{n - 1} nor the ignore label "
                        f"{self.ignore_label}"
                    )
                if rgb in seen and seen[rgb] != train_id:
                    raise LabelMapError(
                        f"{source}: field 'palette': colour {list(rgb)} maps to both {seen[rgb]} and {train_id}"
                    )
                seen[rgb] = train_id
        if self.id_remap is not None:
            sources = [s for s, _ in self.id_remap]
            if len(set(sources)) != len(sources):
                dupes = sorted({s for s in sources if sources.count(s) > 1})
                raise LabelMapError(f"{source}: field 'id_remap': source ids {dupes} are listed more than once")
            for s, t in self.id_remap:
                if s < 0:
                    raise LabelMapError(f"{source}: field 'id_remap': source id {s} is negative")
                if not (0 <= t < n or t == self.ignore_label):
                    raise LabelMapError(
                        f"{source}: field 'id_remap': source id {s} maps to {t}, which is neither "
                        f"a class id 0..{n - 1} nor the ignore label {self.ignore_label}"
                    )
        return self

    # -- basic properties ---------------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def colors(self) -> np.ndarray:
        """Display palette: uint8 [256, 3], row i = colour of train id i (the VOC colour map where unset)."""
        from data.voc import voc_palette

        table = voc_palette()
        done = set()
        for rgb, train_id in self.palette or ():
            if train_id not in done:
                table[train_id] = rgb
                done.add(train_id)
        return table

    def class_colors(self) -> Dict[int, Tuple[int, int, int]]:
        """{train id: (r, g, b)}: the first palette colour of each id (ids without one are left out)."""
        out = {}
        for rgb, train_id in self.palette or ():
            out.setdefault(train_id, rgb)
        return out

    # -- (de)serialisation --------------------------------------------------------------------------------------

    def to_json_dict(self) -> Dict[str, Any]:
        colours = self.class_colors()
        classes = []
        for i, name in enumerate(self.names):
            entry = {"id": i, "name": name}
            if i in colours:
                entry["color"] = list(colours[i])
            classes.append(entry)
        out = {"name": self.name, "ignore_label": int(self.ignore_label), "classes": classes}
        if self.palette is not None:
            extra = [
                {"color": list(rgb), "id": i}
                for rgb, i in self.palette
                if i >= self.num_classes or colours.get(i) != rgb
            ]
            if extra:
                out["palette"] = extra
        if self.id_remap is not None:
            out["id_remap"] = {str(s): t for s, t in self.id_remap}
        return out

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "LabelMap":
        """A LabelMap from the JSON/YAML structure (see the module docstring); LabelMapError names `source`."""
        if not isinstance(data, dict):
            raise LabelMapError(f"{source}: expected an object with a 'classes' field, got {type(data).__name__}")
        unknown = sorted(set(data) - {"name", "ignore_label", "classes", "palette", "id_remap"})
        if unknown:
            raise LabelMapError(
                f"{source}: unknown fields {unknown} (allowed: name, ignore_label, classes, palette, id_remap)"
            )
        if "classes" not in data:
            raise LabelMapError(f"{source}: field 'classes' is missing")
        classes = data["classes"]
        if not isinstance(classes, list) or not classes:
            raise LabelMapError(
                f"{source}: field 'classes' must be a non-empty list of names or {{'id', 'name', 'color'}} objects"
            )
        by_id, palette = {}, []
        for k, entry in enumerate(classes):
            where = f"{source}: field 'classes[{k}]"
            if isinstance(entry, str):
                entry = {"id": k, "name": entry}
            if not isinstance(entry, dict):
                raise LabelMapError(f"{where}': expected a name or an object with 'id' and 'name', got {entry!r}")
            extra = sorted(set(entry) - {"id", "name", "color"})
            if extra:
                raise LabelMapError(f"{where}': unknown keys {extra} (allowed: id, name, color)")
            if "name" not in entry:
                raise LabelMapError(f"{where}.name' is missing")
            class_id = _int(entry.get("id", k), f"{where}.id'")
            if class_id in by_id:
                raise LabelMapError(f"{where}.id': duplicate id {class_id} (also used by {by_id[class_id]!r})")
            by_id[class_id] = str(entry["name"])
            if "color" in entry:
                palette.append((_rgb(entry["color"], f"{where}.color'"), class_id))
        ids = sorted(by_id)
        if ids != list(range(len(ids))):
            missing = sorted(set(range(max(ids) + 1)) - set(ids))
            raise LabelMapError(
                f"{source}: field 'classes': ids must be contiguous 0..{len(ids) - 1}, got {ids[:10]}"
                f"{'...' if len(ids) > 10 else ''} (missing {missing[:10]}); remap source ids with "
                "'id_remap'"
            )
        ignore = data.get("ignore_label", DEFAULT_IGNORE_LABEL)
        if isinstance(ignore, bool) or not isinstance(ignore, int) or not 0 <= ignore <= 255:
            raise LabelMapError(f"{source}: field 'ignore_label': {ignore!r} is not an integer 0..255")
        if ignore in by_id:
            raise LabelMapError(
                f"{source}: field 'ignore_label': {ignore} collides with class id {ignore} "
                f"({by_id[ignore]!r}); class ids are 0..{len(by_id) - 1}"
            )
        for k, entry in enumerate(data.get("palette") or []):
            where = f"{source}: field 'palette[{k}]"
            if isinstance(entry, dict):
                if set(entry) != {"color", "id"}:
                    raise LabelMapError(f"{where}': expected {{'color': [r, g, b], 'id': train_id}}, got {entry!r}")
                rgb, train_id = entry["color"], entry["id"]
            elif isinstance(entry, (list, tuple)) and len(entry) == 2:
                rgb, train_id = entry
            else:
                raise LabelMapError(f"{where}': expected {{'color': [r, g, b], 'id': train_id}}, got {entry!r}")
            train_id = _int(train_id, f"{where}.id'")
            if not (0 <= train_id < len(by_id) or train_id == ignore):
                raise LabelMapError(
                    f"{where}.id': colour {list(rgb)} maps to id {train_id}, which is neither a "
                    f"class id 0..{len(by_id) - 1} nor the ignore label {ignore}"
                )
            palette.append((_rgb(rgb, f"{where}.color'"), train_id))
        remap = data.get("id_remap")
        if remap is not None:
            if not isinstance(remap, dict):
                raise LabelMapError(f"{source}: field 'id_remap' must be an object {{source id: train id}}")
            remap = tuple(
                (_int(s, f"{source}: field 'id_remap' key"), _int(t, f"{source}: field 'id_remap[{s}]'"))
                for s, t in remap.items()
            )
        try:
            return cls(
                names=tuple(by_id[i] for i in ids),
                ignore_label=ignore,
                palette=tuple(palette) or None,
                id_remap=remap,
                name=str(data.get("name", "custom")),
            )
        except LabelMapError as e:
            raise LabelMapError(str(e).replace("<LabelMap>", source, 1)) from None

    @classmethod
    def load(cls, path: str) -> "LabelMap":
        """Reads a .json (or, with PyYAML installed, .yaml/.yml) label map; errors name the file."""
        from data import fileio

        path = str(path)
        try:
            text = fileio.read_text(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"label map file {path} does not exist") from None
        if path.lower().endswith((".yaml", ".yml")):
            try:
                import yaml
            except ImportError:
                raise LabelMapError(
                    f"{path}: YAML label maps need PyYAML (pip install pyyaml); or write it as JSON"
                ) from None
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise LabelMapError(f"{path}: not valid YAML ({e})") from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise LabelMapError(f"{path}: not valid JSON ({e})") from None
        return cls.from_json_dict(data, source=path)

    def save(self, path: str) -> str:
        """Writes the label map as JSON (YAML for .yaml/.yml paths, with PyYAML); returns the path."""
        path = str(path)
        data = self.to_json_dict()
        if path.lower().endswith((".yaml", ".yml")):
            import yaml

            text = yaml.safe_dump(data, sort_keys=False)
        else:
            text = json.dumps(data, indent=2) + "\n"
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    # -- masks --------------------------------------------------------------------------------------------------

    def remap_table(self, size: int = 256) -> Optional[np.ndarray]:
        """uint8 [size] lookup table source id -> train id (None without an id_remap)."""
        if self.id_remap is None:
            return None
        table = np.full(size, self.ignore_label, dtype=np.uint8)
        for s, t in self.id_remap:
            if s < size:
                table[s] = t
        return table

    def encode_mask(self, mask: np.ndarray, source: Optional[str] = None) -> np.ndarray:
        """Train ids (uint8 [H, W], ignore = `ignore_label`) of a raw mask.

        mask: [H, W] integer ids (remapped by `id_remap` when set, else checked to be class ids or the
        ignore label), or [H, W, 3|4] RGB(A) colours looked up in `palette` (alpha is dropped).
        Raises MaskValueError (a ValueError) naming the offending ids or colours, and `source` (the file).
        """
        mask = np.asarray(mask)
        where = f"{source}: " if source else ""
        if mask.ndim == 3 and mask.shape[2] in (3, 4):
            return self._encode_rgb(mask[..., :3], source, where)
        if mask.ndim != 2:
            raise MaskValueError(
                f"{where}mask has shape {mask.shape}; expected [H, W] ids or [H, W, 3] colours", source
            )
        if mask.dtype.kind not in "ui" and mask.dtype != bool:
            raise MaskValueError(f"{where}mask has dtype {mask.dtype}; expected integer ids", source)
        if mask.size and mask.min() < 0:
            bad = sorted(int(v) for v in np.unique(mask[mask < 0]))[:20]
            raise MaskValueError(f"{where}mask values {bad} are negative", source, bad)
        if self.id_remap is not None:
            top = int(mask.max()) + 1 if mask.size else 1
            return self.remap_table(max(256, top))[mask]
        values = np.flatnonzero(np.bincount(mask.ravel(), minlength=1)) if mask.size else np.array([], int)
        bad = [int(v) for v in values if not (v < self.num_classes or v == self.ignore_label)]
        if bad:
            shown = bad[:20] + (["..."] if len(bad) > 20 else [])
            raise MaskValueError(
                f"{where}mask values {shown} are not in label map {self.name!r} (class ids "
                f"0..{self.num_classes - 1} and ignore {self.ignore_label}); add them to the label "
                "map or map them with 'id_remap'",
                source,
                bad,
            )
        return mask.astype(np.uint8, copy=False)

    def _encode_rgb(self, rgb, source, where):
        if not self.palette:
            raise MaskValueError(
                f"{where}mask is an RGB colour image but label map {self.name!r} has no palette; "
                "add 'color' to its classes (or a 'palette') or save the mask as class ids",
                source,
            )
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        keys = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
        lookup = {(r << 16) | (g << 8) | b: i for (r, g, b), i in reversed(self.palette)}
        colours, inverse = np.unique(keys.ravel(), return_inverse=True)
        ids = np.empty(len(colours), dtype=np.uint8)
        bad = []
        for k, key in enumerate(colours.tolist()):
            if key in lookup:
                ids[k] = lookup[key]
            else:
                bad.append((key >> 16, (key >> 8) & 255, key & 255))
        if bad:
            shown = [list(c) for c in bad[:10]] + (["..."] if len(bad) > 10 else [])
            raise MaskValueError(
                f"{where}mask colours {shown} are not in the palette of label map {self.name!r}; "
                "add them to its 'palette' (use the ignore label for colours to skip)",
                source,
                bad,
            )
        return ids[inverse].reshape(keys.shape)

    def decode_mask(self, train_ids: np.ndarray) -> np.ndarray:
        """Display colours of a train-id mask: uint8 [H, W, 3] (see `colors`)."""
        return self.colors()[np.asarray(train_ids, dtype=np.uint8)]

    # -- built-in maps ------------------------------------------------------------------------------------------

    @classmethod
    def voc(cls) -> "LabelMap":
        """Pascal VOC 2012: 21 classes (data/voc.py VOC_CLASSES), the VOC colour map, 255 = ignore."""
        from data.voc import IGNORE_LABEL, VOC_CLASSES, voc_palette

        colours = voc_palette()
        palette = tuple((tuple(int(c) for c in colours[i]), i) for i in range(len(VOC_CLASSES)))
        palette += ((tuple(int(c) for c in colours[IGNORE_LABEL]), IGNORE_LABEL),)
        return cls(names=VOC_CLASSES, ignore_label=IGNORE_LABEL, palette=palette, name="voc")

    @classmethod
    def cityscapes(cls) -> "LabelMap":
        """Cityscapes: the 19 train ids of cityscapesScripts' labels.py, its colours, and labelIds -> trainIds."""
        palette = tuple((rgb, train_id) for train_id, (_, _, rgb) in enumerate(CITYSCAPES_CLASSES))
        remap = tuple((label_id, train_id) for train_id, (_, label_id, _) in enumerate(CITYSCAPES_CLASSES))
        return cls(
            names=tuple(name for name, _, _ in CITYSCAPES_CLASSES),
            ignore_label=255,
            palette=palette,
            id_remap=remap,
            name="cityscapes",
        )

    @classmethod
    def ade20k(cls) -> "LabelMap":
        """ADE20K SceneParsing (ADEChallengeData2016): 150 classes; mask value k in 1..150 -> k-1, 0 -> ignore."""
        return cls(
            names=ADE20K_CLASSES, ignore_label=255, id_remap=tuple((k, k - 1) for k in range(1, 151)), name="ade20k"
        )

    @classmethod
    def synthetic(cls, num_classes: int) -> "LabelMap":
        """A made-up map: 'background', 'class_1'..'class_{N-1}', VOC colour-map colours, (224, 224, 192) = ignore."""
        from data.voc import voc_palette

        if not 2 <= int(num_classes) <= 255:
            raise LabelMapError(f"<LabelMap>: field 'classes': num_classes {num_classes} is not in 2..255")
        colours = voc_palette()
        names = ("background",) + tuple(f"class_{k}" for k in range(1, int(num_classes)))
        palette = tuple((tuple(int(c) for c in colours[i]), i) for i in range(len(names)))
        palette += ((tuple(int(c) for c in colours[255]), 255),)
        return cls(names=names, palette=palette, name=f"synthetic{int(num_classes)}")

    @classmethod
    def builtin(cls, name: str) -> "LabelMap":
        """'voc', 'cityscapes' or 'ade20k'."""
        makers = {"voc": cls.voc, "cityscapes": cls.cityscapes, "ade20k": cls.ade20k}
        if name not in makers:
            raise LabelMapError(f"unknown built-in label map {name!r}; choose one of {sorted(makers)} or a file")
        return makers[name]()

    @classmethod
    def resolve(cls, value: Any) -> "LabelMap":
        """None -> VOC; a LabelMap as is; a built-in name; else a file path."""
        if value is None:
            return cls.voc()
        if isinstance(value, LabelMap):
            return value
        if isinstance(value, dict):
            return cls.from_json_dict(value)
        if str(value) in ("voc", "cityscapes", "ade20k"):
            return cls.builtin(str(value))
        return cls.load(value)


# (train name, Cityscapes labelId, RGB) for trainIds 0..18, from cityscapesScripts/helpers/labels.py.
CITYSCAPES_CLASSES = (
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)),
    ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
)

# ADE20K SceneParsing's 150 classes in objectInfo150 order (train id = index; mask value = index + 1): the first
# name of each objectInfo150.csv entry, as used by mmsegmentation's ADE20KDataset.
ADE20K_CLASSES = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)
assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150
assert len(CITYSCAPES_CLASSES) == 19

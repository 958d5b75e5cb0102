"""data/label_map.py: loading, validation, built-in maps and mask encoding."""

import json

import numpy as np
import pytest

from data.label_map import ADE20K_CLASSES, LabelMap, LabelMapError, MaskValueError
from data.voc import IGNORE_LABEL, NUM_CLASSES, VOC_CLASSES, voc_palette
from tests.helpers import FIVE_CLASSES

FIVE = FIVE_CLASSES


def _write(tmp_path, data, name="map.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_load_json_and_round_trip(tmp_path):
    lm = LabelMap.load(_write(tmp_path, FIVE))
    assert lm.num_classes == 5 and lm.names == ("background", "road", "car", "tree", "sky")
    assert lm.ignore_label == 255 and lm.name == "five" and lm.id_remap is None
    assert lm.colors()[2].tolist() == [0, 0, 142] and lm.colors()[255].tolist() == [255, 255, 255]
    assert lm.colors()[7].tolist() == voc_palette()[7].tolist()  # unset ids: VOC colour map
    assert LabelMap.load(lm.save(tmp_path / "again.json")) == lm
    assert LabelMap.from_json_dict(lm.to_json_dict()) == lm
    # Plain list of names: id = position.
    assert LabelMap.load(_write(tmp_path, {"classes": ["a", "b"]})).names == ("a", "b")


def test_yaml(tmp_path):
    pytest.importorskip("yaml")
    path = _write(
        tmp_path,
        "classes:\n  - {id: 0, name: bg}\n  - {id: 1, name: fg, color: [1, 2, 3]}\nignore_label: 200\n",
        "map.yaml",
    )
    lm = LabelMap.load(path)
    assert lm.names == ("bg", "fg") and lm.ignore_label == 200 and lm.class_colors() == {1: (1, 2, 3)}
    assert LabelMap.load(lm.save(tmp_path / "b.yml")) == lm


@pytest.mark.parametrize(
    "change, field, words",
    [
        (lambda d: d["classes"].__setitem__(2, {"id": 1, "name": "car"}), "classes[2].id", "duplicate id 1"),
        (lambda d: d["classes"].__setitem__(4, {"id": 7, "name": "sky"}), "classes", "contiguous"),
        (lambda d: d["classes"][1].__setitem__("color", [128, 64]), "classes[1].color", "[R, G, B]"),
        (lambda d: d["classes"][1].__setitem__("color", [128, 64, 300]), "classes[1].color", "0..255"),
        (lambda d: d.__setitem__("ignore_label", 3), "ignore_label", "collides with class id 3"),
        (lambda d: d.__setitem__("ignore_label", 256), "ignore_label", "0..255"),
        (lambda d: d["palette"].append({"color": [9, 9, 9], "id": 40}), "palette[1]", "maps to id 40"),
        (lambda d: d.__setitem__("id_remap", {"7": 9}), "id_remap", "maps to 9"),
        (lambda d: d.__setitem__("colours", []), "unknown fields", "colours"),
        (lambda d: d.pop("classes"), "classes", "missing"),
    ],
)
def test_validation_errors_name_file_and_field(tmp_path, change, field, words):
    data = json.loads(json.dumps(FIVE))
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(LabelMapError) as e:
        LabelMap.load(path)
    message = str(e.value)
    assert str(path) in message and field in message and words in message, message


def test_bad_files(tmp_path):
    with pytest.raises(LabelMapError, match="not valid JSON"):
        LabelMap.load(_write(tmp_path, "{nope"))
    with pytest.raises(FileNotFoundError, match="absent.json"):
        LabelMap.load(tmp_path / "absent.json")


def test_voc_builtin_equals_voc_constants():
    lm = LabelMap.voc()
    assert lm.names == VOC_CLASSES and lm.num_classes == NUM_CLASSES and lm.ignore_label == IGNORE_LABEL
    assert (lm.colors() == voc_palette()).all()
    assert LabelMap.resolve(None) == lm
    label = np.array([[0, 1, 20], [255, 15, 0]], np.uint8)
    assert (lm.encode_mask(label) == label).all()
    assert (lm.encode_mask(voc_palette()[label]) == label).all()  # RGB VOC colour masks too


def test_cityscapes_builtin():
    lm = LabelMap.cityscapes()
    assert lm.num_classes == 19 and lm.names[0] == "road" and lm.names[18] == "bicycle"
    assert lm.colors()[0].tolist() == [128, 64, 128] and lm.colors()[13].tolist() == [0, 0, 142]
    label_ids = np.array([[7, 8, 11, 0], [26, 33, 34, 255], [1, 6, 9, 31]], np.uint8)
    assert lm.encode_mask(label_ids).tolist() == [[0, 1, 2, 255], [13, 18, 255, 255], [255, 255, 255, 16]]
    remap = dict(lm.id_remap)
    assert len(remap) == 19 and remap[7] == 0 and remap[24] == 11 and remap[32] == 17


def test_ade20k_builtin():
    lm = LabelMap.ade20k()
    assert lm.num_classes == 150 and len(ADE20K_CLASSES) == 150
    assert lm.names[0] == "wall" and lm.names[12] == "person" and lm.names[149] == "flag"
    assert lm.encode_mask(np.array([[0, 1, 2, 150]], np.uint8)).tolist() == [[255, 0, 1, 149]]


def test_rgb_palette_conversion_and_unknown_colour():
    lm = LabelMap.from_json_dict(FIVE)
    rgb = np.array([[[0, 0, 0], [128, 64, 128]], [[255, 255, 255], [70, 130, 180]]], np.uint8)
    assert lm.encode_mask(rgb).tolist() == [[0, 1], [255, 4]]
    rgba = np.concatenate([rgb, np.full((2, 2, 1), 255, np.uint8)], axis=-1)
    assert lm.encode_mask(rgba).tolist() == [[0, 1], [255, 4]]
    rgb[0, 0] = (1, 2, 3)
    with pytest.raises(MaskValueError, match=r"masks/x\.png: mask colours \[\[1, 2, 3\]\]") as e:
        lm.encode_mask(rgb, source="masks/x.png")
    assert e.value.values == ((1, 2, 3),) and e.value.reason == "label_out_of_range"
    with pytest.raises(ValueError, match="no palette"):
        LabelMap(names=("a", "b")).encode_mask(rgb)


def test_value_outside_map_rejected_with_value_and_file():
    lm = LabelMap.from_json_dict(FIVE)
    mask = np.array([[0, 1, 2], [9, 255, 42]], np.uint8)
    with pytest.raises(ValueError, match=r"masks/a\.png: mask values \[9, 42\] are not in label map 'five'") as e:
        lm.encode_mask(mask, source="masks/a.png")
    assert isinstance(e.value, MaskValueError) and e.value.path == "masks/a.png" and e.value.values == (9, 42)
    assert lm.encode_mask(np.array([[4, 255]], np.uint16)).dtype == np.uint8


def test_custom_remap():
    lm = LabelMap.from_json_dict({"classes": ["bg", "thing"], "id_remap": {"0": 0, "10": 1, "11": 1}})
    assert lm.encode_mask(np.array([[0, 10, 11, 12, 300]], np.int32)).tolist() == [[0, 1, 1, 255, 255]]
    with pytest.raises(ValueError, match="negative"):
        lm.encode_mask(np.array([[-1]]))


def test_synthetic_map_and_direct_construction_checks():
    lm = LabelMap.synthetic(5)
    assert lm.names == ("background", "class_1", "class_2", "class_3", "class_4")
    assert set(lm.class_colors()) == {0, 1, 2, 3, 4, 255}
    with pytest.raises(LabelMapError, match="<LabelMap>: field 'classes': duplicate class names"):
        LabelMap(names=("a", "a"))
    with pytest.raises(LabelMapError, match="ignore_label"):
        LabelMap(names=("a", "b"), ignore_label=1)
    hash(LabelMap.cityscapes())  # frozen and hashable

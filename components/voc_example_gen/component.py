"""VocExampleGen: Pascal VOC 2012 / SBD (or the reference repo's TFRecords) -> standard TFX `Examples`.

Each output split is one dataset split, declared in a standard `example_gen_pb2.Input` whose split
`pattern` is a split recipe of `data.splits` (`voc_train`, `train_aug`, `file:PATH`, ...) or
`reference:GLOB` for TFRecords written by sthalles/deeplab_v3 (`height`, `width`, `image_raw`,
`annotation_raw`). The output is what every TFX ExampleGen writes: GZIP TFRecords of tf.train.Example
under `Split-<name>/`, `split_names`, payload and file format properties, plus span/version/input
fingerprint from the driver so that TFX caching notices when the dataset's lists or masks change.
"""

import json
from typing import Any, Dict, Optional

from tfx import types
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import io_utils, proto_utils

from components.voc_example_gen import executor
from components.voc_example_gen.spec import (
    DATA_ROOT_KEY,
    DEFAULT_GENERIC_SPLIT_RECIPES,
    DEFAULT_MAX_REJECTED_FRACTION,
    DEFAULT_NUM_SHARDS,
    DEFAULT_SPLIT_RECIPES,
    LAYOUT_KEY,
    SBD_ROOT_KEY,
    VOC_ROOT_KEY,
    VocExampleGenSpec,
)
from components.voc_example_gen.transforms import REFERENCE_PREFIX

# What the TFX cache fingerprints of each dataset layout (globs under data_root): a changed split list, label map or
# set of files means a new ingest. Listing names, not reading pixels: millions of files cost only their stat.
DATASET_FINGERPRINTS = {
    "generic": (("lists", "splits/*.txt"), ("label_map", "label_map.json")),
    "cityscapes": (("images", "leftImg8bit/*/*/*_leftImg8bit.png"), ("masks", "gtFine/*/*/*_gtFine_labelIds.png")),
    "ade20k": (("images", "images/*/*.jpg"), ("masks", "annotations/*/*.png")),
}


def _fingerprint_patterns(exec_properties):
    """File patterns whose sizes and mtimes stand for the input data.

    Only the id lists (and reference TFRecords) are stat-ed: stat-ing every image and mask would be
    10k+ requests on a bucket. Regenerating, re-downloading or editing a list invalidates the cache;
    a file fixed in place without touching the lists needs a run with caching off.
    """
    from data.sbd import SbdDataset  # cheap: no TensorFlow
    from data.voc import VocDevkit

    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
    patterns = []
    for split in input_config.splits:
        if split.pattern.startswith(REFERENCE_PREFIX):
            patterns.append((split.name, split.pattern[len(REFERENCE_PREFIX) :]))
        elif split.pattern.startswith("file:"):
            patterns.append((split.name, split.pattern[len("file:") :]))
    if exec_properties.get(VOC_ROOT_KEY):
        root = VocDevkit(exec_properties[VOC_ROOT_KEY]).root
        patterns.append(("voc_lists", f"{root}/{VocDevkit.LIST_DIR}/*.txt"))
    if exec_properties.get(SBD_ROOT_KEY):
        patterns.append(("sbd_lists", f"{SbdDataset(exec_properties[SBD_ROOT_KEY]).root}/*.txt"))
    layout = exec_properties.get(LAYOUT_KEY)
    if layout in DATASET_FINGERPRINTS and exec_properties.get(DATA_ROOT_KEY):
        root = str(exec_properties[DATA_ROOT_KEY]).rstrip("/")
        patterns += [(f"{layout}_{name}", f"{root}/{glob}") for name, glob in DATASET_FINGERPRINTS[layout]]
    return patterns


class VocExampleGenDriver(example_gen_driver.Driver):
    """Sets span 0 and an input fingerprint (the base driver's contract) without globbing `input_base`."""

    def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
        del pipeline_info, component_info
        executor.check_inputs(exec_properties)  # a missing root fails here, before any Beam start-up
        fingerprints = [
            io_utils.generate_fingerprint(name, pattern) for name, pattern in _fingerprint_patterns(exec_properties)
        ]
        exec_properties[example_gen_utils.SPAN_PROPERTY_NAME] = 0
        exec_properties[example_gen_utils.VERSION_PROPERTY_NAME] = None
        exec_properties[example_gen_utils.FINGERPRINT_PROPERTY_NAME] = "\n".join(fingerprints)
        return exec_properties


def make_input_config(
    split_recipes: Optional[Dict[str, str]] = None,
    reference_tfrecords: Optional[Dict[str, str]] = None,
    layout: Optional[str] = None,
) -> example_gen_pb2.Input:
    """One input split per output split: the recipe name, or `reference:GLOB` for reference TFRecords.

    A split named in `reference_tfrecords` is imported from those files instead of its recipe. With a dataset
    layout (generic, cityscapes, ade20k) the recipes are the dataset's split names (default
    DEFAULT_GENERIC_SPLIT_RECIPES: train and val).
    """
    reference_tfrecords = dict(reference_tfrecords or {})
    defaults = DEFAULT_GENERIC_SPLIT_RECIPES if layout not in (None, "voc") else DEFAULT_SPLIT_RECIPES
    split_recipes = dict(defaults if split_recipes is None and not reference_tfrecords else split_recipes or {})
    for name in reference_tfrecords:
        split_recipes.pop(name, None)
    splits = [example_gen_pb2.Input.Split(name=name, pattern=recipe) for name, recipe in split_recipes.items()]
    splits += [
        example_gen_pb2.Input.Split(name=name, pattern=REFERENCE_PREFIX + glob)
        for name, glob in reference_tfrecords.items()
    ]
    if not splits:
        raise ValueError("VocExampleGen needs at least one split: give split_recipes or reference_tfrecords")
    names = [s.name for s in splits]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate split names in {names}")
    return example_gen_pb2.Input(splits=splits)


def label_map_json(label_map):
    """The `label_map` exec property of a label map: None for None (VOC), else
    json.dumps(LabelMap.resolve(label_map).to_json_dict(), sort_keys=True); a string that is already such
    JSON (starts with '{') is parsed and re-dumped, so every component gets the same text."""
    if label_map is None or label_map == "":
        return None
    from data.label_map import LabelMap

    if isinstance(label_map, str) and label_map.lstrip().startswith("{"):
        label_map = LabelMap.from_json_dict(json.loads(label_map), source="label_map JSON")
    return json.dumps(LabelMap.resolve(label_map).to_json_dict(), sort_keys=True)


class VocExampleGen(base_beam_component.BaseBeamComponent):
    """Custom ExampleGen for Pascal VOC 2012 + SBD segmentation data (a Beam executor).

    Example:
      example_gen = VocExampleGen(voc_root="gs://bucket/VOCdevkit/VOC2012", sbd_root="gs://bucket/SBD",
                                  split_recipes={"train": "train_aug", "val": "voc_val"})

    Outputs `examples`: standard `Examples` (official DeepLab keys, see docs/ARCHITECTURE.md), and a
    report `example_gen_report.json` (examples, rejects with reasons and files, conversions per split) in the
    artifact directory.
    """

    SPEC_CLASS = VocExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = VocExampleGenDriver

    def __init__(
        self,
        voc_root: Optional[str] = None,
        sbd_root: Optional[str] = None,
        split_recipes: Optional[Dict[str, str]] = None,
        reference_tfrecords: Optional[Dict[str, str]] = None,
        max_rejected_fraction: float = DEFAULT_MAX_REJECTED_FRACTION,
        num_shards: int = DEFAULT_NUM_SHARDS,
        label_map: Optional[Any] = None,
        layout: Optional[str] = None,
        data_root: Optional[str] = None,
    ):
        """Builds the component.

        Args:
          voc_root: VOCdevkit/VOC2012 (or a folder above it); local or any tf.io.gfile file system.
          sbd_root: SBD's benchmark_RELEASE (or its dataset/ folder), for the sbd_* and train_aug recipes.
          split_recipes: output split name -> recipe of data.splits; default DEFAULT_SPLIT_RECIPES
            ({'train': 'voc_train', 'val': 'voc_val'}) when no reference_tfrecords are given.
          reference_tfrecords: output split name -> glob of TFRecords in the reference repo's format.
          max_rejected_fraction: the run fails when a split rejects more than this fraction of its samples.
          num_shards: output files per split; 0 lets the Beam runner decide.
          label_map: the dataset's classes: None (VOC, the checks of data.tfrecord), a
            data.label_map.LabelMap, its dict, a built-in name ('voc', 'cityscapes', 'ade20k'), a JSON/YAML
            path, or the JSON string `label_map_json` makes. Masks go through its encode_mask (id_remap, RGB
            palette); values outside it are rejects ('label_out_of_range', naming the values and the file).
            With a dataset layout and no label_map, the dataset's own: generic ROOT/label_map.json when
            present, the built-in Cityscapes (19 trainIds) and ADE20K (150 classes) maps.
          layout: 'voc' (default: voc_root / sbd_root and the recipes of data.splits), or a reader of
            data.layouts.open_dataset at data_root: 'generic' (images/, masks/, splits/<split>.txt),
            'cityscapes' (leftImg8bit/ + gtFine/ labelIds), 'ade20k' (ADEChallengeData2016); split_recipes then
            map output splits to the dataset's split names, default {'train': 'train', 'val': 'val'}.
          data_root: that dataset's root (dataset layouts only).
        """
        if layout not in (None, "voc", *DATASET_FINGERPRINTS):
            raise ValueError(f"layout must be 'voc' or one of {list(DATASET_FINGERPRINTS)}, got {layout!r}")
        generic = layout not in (None, "voc")  # one of the LabelledDataset layouts
        if generic and not data_root:
            raise ValueError(f"layout {layout!r} needs data_root (the root folder of the dataset)")
        if not 0.0 <= max_rejected_fraction <= 1.0:
            raise ValueError(f"max_rejected_fraction must be in [0, 1], got {max_rejected_fraction}")
        spec = VocExampleGenSpec(
            input_config=make_input_config(split_recipes, reference_tfrecords, layout),
            output_config=example_gen_pb2.Output(),
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            voc_root=str(voc_root) if voc_root else None,
            sbd_root=str(sbd_root) if sbd_root else None,
            max_rejected_fraction=float(max_rejected_fraction),
            num_shards=int(num_shards),
            label_map=label_map_json(label_map),
            layout=layout if generic else None,  # absent for VOC: the compiled pipeline stays as it was
            data_root=str(data_root) if generic else None,
            examples=types.Channel(type=standard_artifacts.Examples),
        )
        super().__init__(spec=spec)

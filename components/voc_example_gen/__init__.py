"""VocExampleGen: custom TFX ExampleGen (Beam) for Pascal VOC 2012 / SBD; see component.py.

VocExampleGen's defaults are plain values here (nothing imported), so the runners' settings
(pipeline/configs.py) and the CLIs can read them without TFX; spec.py re-exports them with the keys and the spec.
"""

# output split name -> recipe of data.splits, when neither split recipes nor reference TFRecords are given.
DEFAULT_SPLIT_RECIPES = {"train": "voc_train", "val": "voc_val"}
# The same for a dataset layout (generic, cityscapes, ade20k): output split -> the dataset's split name.
DEFAULT_GENERIC_SPLIT_RECIPES = {"train": "train", "val": "val"}
# The run fails when a split rejects more than this fraction of its samples.
DEFAULT_MAX_REJECTED_FRACTION = 0.05
# Output TFRecord files per split; 0 lets the Beam runner decide (one per bundle on the DirectRunner).
DEFAULT_NUM_SHARDS = 0

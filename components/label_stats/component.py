"""LabelStatsGen: per-split class pixel histogram of segmentation Examples.

StatisticsGen sees the mask only as an opaque PNG string, so it cannot notice a label 37 in a mask or
a class that never occurs in the training split. This component decodes every mask (Beam) and writes,
per split, the pixel count of each class id 0..20, of 255 (ignore) and of any other value, as
`label_stats.json` and `label_stats.png` in a `LabelStatistics` artifact. Labels outside 0..20/255
(or masks that cannot be decoded) are anomalies: the run fails on them unless `fail_on_anomaly=False`.
"""

import json
from typing import Any, List, Optional

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec

from components.label_stats import executor
from components.label_stats.spec import DEFAULT_FAIL_ON_ANOMALY, LabelStatistics, LabelStatsGenSpec

__all__ = ["LabelStatistics", "LabelStatsGen", "LabelStatsGenSpec"]


class LabelStatsGen(base_beam_component.BaseBeamComponent):
    """Class pixel histogram per split of an `Examples` artifact in the official DeepLab format.

    Example:
      label_stats = LabelStatsGen(examples=example_gen.outputs["examples"])
    """

    SPEC_CLASS = LabelStatsGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        exclude_splits: Optional[List[str]] = None,
        fail_on_anomaly: bool = DEFAULT_FAIL_ON_ANOMALY,
        num_classes: Optional[int] = None,
        label_map: Optional[Any] = None,
    ):
        """Builds the component.

        Args:
          examples: an `Examples` channel (VocExampleGen output).
          exclude_splits: split names to skip.
          fail_on_anomaly: fail the run when a mask holds labels outside 0..num_classes-1 and 255, or cannot
            be decoded; with False they are only recorded in label_stats.json.
          num_classes: number of valid class ids (default data.voc.NUM_CLASSES = 21); ignored with a label_map.
          label_map: the dataset's classes (None: VOC / `num_classes`; a data.label_map.LabelMap, its dict, a
            built-in name, a JSON/YAML path or its JSON string): number of classes, names, ignore label and
            colours of the statistics.
        """
        from components.voc_example_gen.component import label_map_json

        spec = LabelStatsGenSpec(
            examples=examples,
            exclude_splits=json.dumps(exclude_splits or []),
            fail_on_anomaly=int(bool(fail_on_anomaly)),
            num_classes=num_classes,
            label_map=label_map_json(label_map),
            label_statistics=types.Channel(type=LabelStatistics),
        )
        super().__init__(spec=spec)

"""Write ExampleGen-layout TFRecords (<out>/Split-<split>/data_tfrecord-00000-of-00001.gz) from a VOCdevkit
tree, without running the TFX pipeline: the same data.tfrecord codec, so benches of the trainer do
not depend on Beam. Bad samples are counted and reported, never dropped silently.
"""

import collections
import os

import tensorflow as tf

from data import tfrecord
from data.splits import SampleRef
from data.voc import VocDevkit


def write_examples(voc_root, output_dir, splits=("train", "val")):
    """Returns {split: {"written": n, "rejected": {reason: n}}}."""
    voc = VocDevkit(voc_root)
    stats = {}
    for split in splits:
        out = os.path.join(output_dir, f"Split-{split}")
        os.makedirs(out, exist_ok=True)
        written, rejected = 0, collections.Counter()
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        with tf.io.TFRecordWriter(os.path.join(out, "data_tfrecord-00000-of-00001.gz"), options) as writer:
            for image_id in voc.split_ids(split):
                ref = SampleRef(image_id, "voc", voc.image_path(image_id), voc.mask_path(image_id))
                try:
                    sample = tfrecord.load_sample(ref)
                except tfrecord.BadSample as e:
                    rejected[e.reason] += 1
                    print(f"skipped {image_id}: {e}")
                    continue
                writer.write(tfrecord.to_example(sample).SerializeToString())
                written += 1
        stats[split] = {"written": written, "rejected": dict(rejected)}
    return stats

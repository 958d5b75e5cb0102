"""The Beam side of VocExampleGen: what runs on workers, kept free of TFX and TensorFlow imports.

Beam workers import the module of every DoFn they run, and every worker process pays for its imports
before it does any work: TensorFlow alone is ~12 s of CPU, TFX's executor modules ~6 s more. On a
2-core machine that start-up was most of the ingest time (bench/ingest.py), so the workers here build
the Example protos with `data.tfrecord.example_bytes` (a wire-identical, protobuf-only copy of
tf.train.Example) and write files through Beam's FileSystems. Only reference-format imports still load
TensorFlow.

Per split:

    Create(shuffled refs) -> ParDo(load + validate + encode) --examples--> TFRecord sink (GZIP)
                                                             --rejects---> summary JSON
                                                             --conversions-> summary JSON

or ReadAllFromTFRecord -> ParDo(convert) for TFRecords in the reference repo's format.
"""

import hashlib
import json
import logging
import os
import random
import struct

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes

from data.tfrecord import BadSample, example_bytes, load_sample, parse_light_example

REFERENCE_PREFIX = "reference:"
METRICS_NAMESPACE = "VocExampleGen"
TFRECORD_FILE_PREFIX = "data_tfrecord"  # tfx.components.example_gen.write_split.DEFAULT_TF_RECORD_FILE_NAME
EXAMPLES, REJECTS, CONVERSIONS = "examples", "rejects", "conversions"
SHUFFLE_SEED = 0

log = logging.getLogger(__name__)


# Dataset layouts VocExampleGen reads: 'voc' (VOCdevkit / SBD through data.splits recipes, the default) and the
# readers of data.layouts.DATASET_LAYOUTS ('generic': images/, masks/, splits/<split>.txt; 'cityscapes'; 'ade20k'),
# where a recipe is one of the dataset's split names.
LAYOUTS = ("voc", "generic", "cityscapes", "ade20k")


def resolve_refs(recipe, voc_root=None, sbd_root=None, layout=None, data_root=None):
    """SampleRefs of one split recipe (data.splits; with a dataset layout, one of the splits of `data_root`)."""
    if layout and layout != "voc":
        from data.layouts import open_dataset

        return open_dataset(layout, data_root, label_map="voc").refs(recipe)  # paths only: no label map used
    from data.splits import resolve_recipe

    return resolve_recipe(recipe, voc_root=voc_root or None, sbd_root=sbd_root or None)


def decode_label_map(label_map_json):
    """The `data.label_map.LabelMap` of a `label_map` exec property (its JSON string), None for None/'' (VOC)."""
    if not label_map_json:
        return None
    from data.label_map import LabelMap

    return LabelMap.from_json_dict(json.loads(label_map_json), source="exec property label_map")


# The TF-free parser under the name the LabelStatsGen workers import.
parse_example = parse_light_example


class _ToExampleFn(beam.DoFn):
    """SampleRef -> serialized tf.train.Example; BadSample -> a 'rejects' output, conversions -> 'conversions'."""

    def __init__(self, split_name, label_map=None):
        self._split = split_name
        # The label map travels as its JSON string (picklable, small); None = VOC, the checks of data.tfrecord.
        self._label_map_json = label_map or None
        self._label_map = None
        self._written = beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"{split_name}/examples_written")

    def setup(self):
        self._label_map = decode_label_map(self._label_map_json)

    def _reject(self, error, sample_id):
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"{self._split}/rejected/{error.reason}").inc()
        log.warning("VocExampleGen[%s] skipping %s: %s", self._split, sample_id, error)
        return beam.pvalue.TaggedOutput(
            REJECTS, {"id": sample_id, "reason": error.reason, "path": error.path, "detail": error.detail}
        )

    def process(self, ref):
        try:
            sample = load_sample(ref, label_map=self._label_map)
        except BadSample as e:
            yield self._reject(e, ref.id)
            return
        if sample.converted:
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"{self._split}/converted/{sample.converted}").inc()
            yield beam.pvalue.TaggedOutput(
                CONVERSIONS, {"id": ref.id, "conversion": sample.converted, "path": ref.image_path}
            )
        self._written.inc()
        yield example_bytes(sample)


class _ReferenceToExampleFn(_ToExampleFn):
    """(file name, reference-format record) -> serialized official-format tf.train.Example."""

    def process(self, element):
        from data.tfrecord import reference_record_to_example  # loads TensorFlow

        path, record = element
        # Reference records carry no file name; name them by source file and content so that the
        # name is stable across runs and a reject can be found again.
        stem = os.path.basename(path).split(".")[0]
        sample_id = f"{stem}-{hashlib.sha1(record).hexdigest()[:12]}"
        try:
            example = reference_record_to_example(record, filename=sample_id, label_map=self._label_map)
        except BadSample as e:
            e.path = f"{path} (record {sample_id})"
            yield self._reject(e, sample_id)
            return
        self._written.inc()
        yield example.SerializeToString()


def write_summary(split_name, path, num_examples, rejects, conversions):
    """Writes what one split produced (counts, rejects, conversions) as JSON; runs on a worker."""
    from apache_beam.io.filesystems import FileSystems

    summary = {
        "split": split_name,
        "examples": num_examples,
        "rejects": sorted(rejects, key=lambda r: r["id"]),
        "conversions": sorted(conversions, key=lambda c: c["id"]),
    }
    with FileSystems.create(path) as f:  # local, gs://, s3://... whatever the runner's file systems serve
        f.write(json.dumps(summary).encode("utf-8"))


@beam.ptransform_fn
def ReadSplit(  # pylint: disable=invalid-name
    pipeline,
    split_pattern,
    voc_root=None,
    sbd_root=None,
    split_name="examples",
    label_map=None,
    layout=None,
    data_root=None,
):
    """Tagged outputs 'examples' (serialized Examples), 'rejects' and 'conversions' (dicts) of one split.

    split_pattern: a recipe of data.splits, or 'reference:GLOB' for reference-format TFRecords.
    label_map: None (VOC) or the JSON string of a data.label_map.LabelMap (the `label_map` exec property):
      masks go through its encode_mask; values outside it are rejects ('label_out_of_range').
    layout, data_root: 'generic' reads split list `split_pattern` of the GenericDataset at `data_root`;
      None / 'voc': the recipes of data.splits.
    """
    if split_pattern.startswith(REFERENCE_PREFIX):
        glob = split_pattern[len(REFERENCE_PREFIX) :]
        records = (
            pipeline
            | "Glob" >> beam.Create([glob])
            | "ReadReference" >> beam.io.ReadAllFromTFRecord(with_filename=True)
            # A TFRecord file is read by one worker; the PNG encoding after it is worth spreading.
            | "Spread" >> beam.Reshuffle()
        )
        fn = _ReferenceToExampleFn(split_name, label_map)
    else:
        refs = resolve_refs(split_pattern, voc_root, sbd_root, layout, data_root)
        log.info("VocExampleGen[%s]: recipe %r -> %d samples", split_name, split_pattern, len(refs))
        # Shuffled here, deterministically, so every output shard mixes ids and classes on any runner
        # (the runner's reshuffle inside Create spreads work, but does not promise an order).
        random.Random(SHUFFLE_SEED).shuffle(refs)
        records = pipeline | "Refs" >> beam.Create(refs)
        fn = _ToExampleFn(split_name, label_map)
    return records | "ToExample" >> beam.ParDo(fn).with_outputs(REJECTS, CONVERSIONS, main=EXAMPLES)


def _crc32c_function():
    """CRC-32C of bytes: google-crc32c (hardware instructions, ~1000x faster) where installed, else crcmod.

    Beam's own TFRecord sink uses python-snappy's CRC, else crcmod's table loop: ~3 ms per 40 KB record,
    as much as validating the sample, where TensorFlow's writer (the plain loop) uses the CPU's instruction.
    """
    try:
        import google_crc32c

        if google_crc32c.implementation == "c":
            return google_crc32c.value
    except ImportError:
        pass
    import crcmod.predefined

    return crcmod.predefined.mkPredefinedCrcFun("crc-32c")


_crc32c = _crc32c_function()


def _masked_crc32c(data):
    crc = _crc32c(data)
    return ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(record):
    """One record in the TFRecord file format: length, masked CRC-32C of the length, data, masked CRC-32C."""
    length = struct.pack("<Q", len(record))
    return b"".join(
        (length, struct.pack("<I", _masked_crc32c(length)), record, struct.pack("<I", _masked_crc32c(record)))
    )


class _TFRecordSink(filebasedsink.FileBasedSink):
    """beam.io.WriteToTFRecord's sink (same files, same compression by suffix) with a hardware CRC-32C."""

    def __init__(self, file_path_prefix, file_name_suffix, num_shards):
        super().__init__(
            file_path_prefix,
            coder=coders.BytesCoder(),
            file_name_suffix=file_name_suffix,
            num_shards=num_shards,
            shard_name_template=None,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.AUTO,
        )

    def write_encoded_record(self, file_handle, value):
        file_handle.write(tfrecord_frame(value))


@beam.ptransform_fn
def WriteExamples(examples, output_split_path, num_shards=0):  # pylint: disable=invalid-name
    """Writes serialized Examples as `data_tfrecord-*.gz` (the standard ExampleGen layout).

    Unlike TFX's WriteSplit there is no Reshuffle before the write: the refs are already shuffled, and
    a reshuffle would move every encoded image through the runner's shuffle once more (bench/ingest.py).
    """
    return examples | "Write" >> beam.io.Write(
        _TFRecordSink(
            os.path.join(output_split_path, TFRECORD_FILE_PREFIX), file_name_suffix=".gz", num_shards=num_shards or 0
        )
    )

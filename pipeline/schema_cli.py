"""`deeplab schema`: propose a new curated schema from a run's statistics, show the diff, optionally write it.

The pipeline validates every split against pipeline/schema/schema.pbtxt (ImportSchemaGen ->
ExampleValidator -> SchemaGate). When the data change on purpose (a new dataset, bigger images), this
command regenerates the schema from the StatisticsGen output of a run:

- default: the checked-in schema relaxed just enough to accept those statistics
  (`tfdv.update_schema`, split after split): curated domains, ranges and presence constraints that the
  data satisfy are kept, new features are added;
- `--infer`: a schema inferred from scratch (`tfdv.infer_schema`), to curate by hand.

It prints a unified diff against the checked-in file on stderr and the proposal on stdout (or writes it to
`--out`; `--write` overwrites the checked-in file), or only "no change" when the statistics fit the schema.
Review the diff: every relaxed constraint is one an anomaly would have caught.
"""

import difflib
import os
import sys

from pipeline import configs

STATS_FILE = "FeatureStats.pb"


def add_arguments(command, parser):
    """Flags of `deeplab schema` (see runner.py)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--statistics",
        metavar="PATH",
        help="a StatisticsGen artifact: its Split-NAME folder, the FeatureStats.pb in it, or the "
        "artifact folder itself (then every split, see --split)",
    )
    source.add_argument(
        "--output-dir",
        help="a local run's folder (`deeplab ingest|run --output-dir`): its latest "
        "StatisticsGen artifact is found in ML Metadata",
    )
    parser.add_argument("--metadata-path", help="ML Metadata sqlite file (default OUTPUT_DIR/metadata.sqlite)")
    parser.add_argument(
        "--pipeline-name", default=configs.PIPELINE_NAME, help="name in ML Metadata (default %(default)s)"
    )
    parser.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="NAME",
        help="split(s) of the artifact to use (repeatable; default: all)",
    )
    parser.add_argument(
        "--schema",
        default=configs.SCHEMA_FILE,
        help="the checked-in schema to start from and diff against (default pipeline/schema/schema.pbtxt)",
    )
    parser.add_argument(
        "--infer",
        action="store_true",
        help="infer from scratch (tfdv.infer_schema) instead of relaxing the checked-in schema",
    )
    parser.add_argument("--out", help="write the proposed schema here (default: print it on stdout, when it differs)")
    parser.add_argument(
        "--write", action="store_true", help="overwrite the checked-in schema (--schema) with the proposal"
    )


def _split_stats_files(path, splits):
    """[(split name, FeatureStats.pb path)] of a --statistics argument."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(path):
        if not tf.io.gfile.exists(path):
            raise SystemExit(f"--statistics {path!r} does not exist")
        return [(os.path.basename(os.path.dirname(path.rstrip("/"))).replace("Split-", "") or "?", path)]
    if tf.io.gfile.exists(os.path.join(path, STATS_FILE)):
        return [(os.path.basename(path.rstrip("/")).replace("Split-", ""), os.path.join(path, STATS_FILE))]
    found = sorted(d.rstrip("/")[len("Split-") :] for d in tf.io.gfile.listdir(path) if d.startswith("Split-"))
    chosen = splits or found
    missing = sorted(set(chosen) - set(found))
    if missing or not chosen:
        raise SystemExit(f"{path}: no {STATS_FILE} for split(s) {missing or chosen} (splits there: {found})")
    return [(name, os.path.join(path, f"Split-{name}", STATS_FILE)) for name in chosen]


def statistics_from_args(args):
    """[(split, DatasetFeatureStatisticsList)] named by --statistics or found via --output-dir's ML Metadata."""
    import tensorflow_data_validation as tfdv

    path = args.statistics
    if path is None:
        from pipeline.report import latest_outputs

        metadata_path = args.metadata_path or configs.local_paths(args.output_dir)[1]
        if not os.path.isfile(metadata_path):
            raise SystemExit(
                f"no ML Metadata at {metadata_path}: run `deeplab ingest --output-dir {args.output_dir}` "
                "first, or give --statistics"
            )
        uris = latest_outputs(metadata_path, args.pipeline_name).get("StatisticsGen", {}).get("statistics")
        if not uris:
            raise SystemExit(f"{metadata_path}: pipeline {args.pipeline_name!r} has no finished StatisticsGen run")
        path = uris[0]
    return [(name, tfdv.load_stats_binary(file)) for name, file in _split_stats_files(path, args.split)]


def load_schema(path):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    with open(path) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def propose_schema(statistics, schema=None):
    """The checked-in `schema` relaxed to accept every statistics in `statistics` (or inferred when None)."""
    import tensorflow_data_validation as tfdv

    for _, stats in statistics:
        schema = tfdv.infer_schema(stats) if schema is None else tfdv.update_schema(schema, stats)
    return schema


def schema_text(schema):
    from google.protobuf import text_format

    return text_format.MessageToString(schema)


def schema_diff(old_text, new_text, old_name, new_name):
    """Unified diff of the schemas, both normalised by text_format (comments and layout do not count)."""
    return "".join(difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True), old_name, new_name))


def main(command, args):
    """Entry point called by runner.py."""
    if command != "schema":
        raise ValueError(f"pipeline.schema_cli does not implement {command!r}")
    import tensorflow_data_validation as tfdv

    statistics = statistics_from_args(args)
    current = load_schema(args.schema)
    proposal = propose_schema(statistics, None if args.infer else current)
    text = schema_text(proposal)
    for split, stats in statistics:
        anomalies = tfdv.validate_statistics(stats, current).anomaly_info
        print(
            f"split {split!r}: {len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'} against {args.schema}"
            + "".join(
                f"\n  {name}: {info.short_description} ({info.description})" for name, info in sorted(anomalies.items())
            ),
            file=sys.stderr,
        )
    diff = schema_diff(schema_text(current), text, args.schema, args.out or "proposed")
    if not diff:  # nothing to review: the schema is not rewritten (that would drop its comments) nor printed
        print(f"no change to {args.schema}: the statistics fit it", file=sys.stderr)
        args.write = False
    else:
        print(diff, file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.write:
        with open(args.schema, "w") as f:
            f.write(text)
        print(f"wrote {args.schema} (review it: the comments of the curated file are not kept)", file=sys.stderr)
    if diff and not args.out and not args.write:
        sys.stdout.write(text)
    return 0

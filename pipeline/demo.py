"""`deeplab demo`: synthetic data -> pipeline -> summary, report and pictures -> a served prediction, in clear steps.

Each step is a function: demo_make_data (1), the pipeline run of pipeline/cli.py (2), the report of
pipeline/report.py (3) and demo_predict (4), which serves the pushed model and calls serving/predict.py.
"""

import json
import os
import sys
import time

from pipeline import configs
from pipeline.cli import RunOptions, add_model_arguments, model_options_from_args, run_pipeline
from pipeline.report import REPORT_FILE, SAMPLES_FILE, print_summary, save_samples_png, write_report

PREDICTION_DIRNAME = "prediction"


def add_arguments(command, parser):
    """Flags of `deeplab demo` (see runner.py)."""
    if command != "demo":
        raise ValueError(f"pipeline.demo does not implement {command!r}")
    parser.add_argument(
        "--workdir",
        default=configs.DEMO_WORKDIR,
        help="folder for the synthetic data, the pipeline outputs and the pictures",
    )
    parser.add_argument("--num-train", type=int, default=configs.DEMO_NUM_TRAIN, help="synthetic training images")
    parser.add_argument("--num-val", type=int, default=configs.DEMO_NUM_VAL, help="synthetic validation images")
    parser.add_argument("--seed", type=int, default=configs.DEMO_SEED, help="seed of the synthetic data")
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=None,
        metavar="ARG",
        help="Beam pipeline argument appended to the defaults (default for the demo: "
        + " ".join(configs.DEMO_BEAM_ARGS)
        + ")",
    )
    parser.add_argument("--no-cache", action="store_true", help="run every component again")
    add_model_arguments(parser)
    parser.set_defaults(preset=configs.DEMO_PRESET, miou_threshold=configs.DEMO_MIOU_THRESHOLD)


def demo_make_data(workdir, num_train, num_val, seed):
    """Step 1: a synthetic VOCdevkit tree under WORKDIR/data; returns its VOC2012 root.

    An existing tree made with the same settings is reused: the ExampleGen cache fingerprint looks at the
    split lists' mtimes, so rewriting identical files would re-run the whole pipeline."""
    from data.synthetic import generate_voc_dataset

    settings = {
        "num_train": num_train,
        "num_val": num_val,
        "seed": seed,
        "min_size": configs.DEMO_MIN_SIZE,
        "max_size": configs.DEMO_MAX_SIZE,
    }
    stamp = os.path.join(workdir, "data", "demo_data.json")
    voc_root = os.path.join(workdir, "data", "VOC2012")
    if os.path.isfile(stamp) and os.path.isdir(voc_root):
        with open(stamp) as f:
            if json.load(f) == settings:
                print(f"    reusing {voc_root} (same settings)")
                return voc_root
    voc_root = generate_voc_dataset(os.path.join(workdir, "data"), progress=True, **settings)
    with open(stamp, "w") as f:
        json.dump(settings, f)
    return voc_root


def demo_predict(serving_dir, model_name, image_path, out_dir):
    """Step 4: start the local TF Serving-compatible endpoint on the pushed model, send one image through the
    gRPC client (serving.predict.predict_files, what `deeplab predict` runs), stop the endpoint. Returns its
    exit code."""
    from serving.predict import predict_files
    from serving.server import ModelServer

    with ModelServer(os.path.join(serving_dir, model_name), model_name=model_name, grpc_port=0, rest_port=0) as server:
        address = f"{server.host}:{server.grpc_port}"
        print(f"    endpoint up: gRPC {address}, REST {server.host}:{server.rest_port} (model {model_name!r})")
        code = predict_files(address, [image_path], out_dir, model_name=model_name)
    print("    endpoint stopped")
    return code


def run_demo(args):
    from data.voc import VocDevkit

    workdir = args.workdir
    started = time.time()
    print(f"[1/4] synthetic dataset: {args.num_train} train + {args.num_val} val images")
    voc_root = demo_make_data(workdir, args.num_train, args.num_val, args.seed)
    options = RunOptions(
        output_dir=workdir,
        voc_root=voc_root,
        split_recipes=dict(configs.SPLIT_RECIPES),
        beam_args=configs.DEMO_BEAM_ARGS if args.beam_arg is None else args.beam_arg,
        enable_cache=not args.no_cache,
        with_model=True,
        **model_options_from_args(args),
    )
    print(
        "[2/4] pipeline (LocalDagRunner): VocExampleGen -> StatisticsGen -> ExampleValidator (curated schema) "
        f"-> SchemaGate, LabelStatsGen -> Transform -> Trainer (preset {args.preset}) -> MiouEvaluator -> AtomicPusher"
    )
    report = run_pipeline(options)
    print("[3/4] report and pictures")
    report["samples_png"] = save_samples_png(report, os.path.join(workdir, SAMPLES_FILE))
    report_path = write_report(report, os.path.join(workdir, REPORT_FILE))
    print_summary(report)
    print(f"samples: {report['samples_png']}\nreport: {report_path}")
    model = report["model"]
    serving_dir = options.serving_dir or configs.serving_dir_beside(report["pipeline_root"])
    if not os.path.isdir(os.path.join(serving_dir, options.model_name)):
        print(
            f"no model was ever pushed to {serving_dir} (see the evaluation report): nothing to serve", file=sys.stderr
        )
        return 1
    if not model["pushed"]:
        print("this run's model was not pushed; serving the latest pushed version instead")
    devkit = VocDevkit(voc_root)
    image_path = devkit.image_path(devkit.split_ids(configs.EVAL_SPLIT)[0])
    print(f"[4/4] serving: gRPC prediction of {image_path}")
    code = demo_predict(serving_dir, options.model_name, image_path, os.path.join(workdir, PREDICTION_DIRNAME))
    print(f"demo finished in {time.time() - started:.0f} s; evaluation report: {model['evaluation_html']}")
    return code


def main(command, args):
    """Entry point called by runner.py."""
    if command != "demo":
        raise ValueError(f"pipeline.demo does not implement {command!r}")
    return run_demo(args)

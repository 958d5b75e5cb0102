"""`deeplab export`, `deeplab serve` and `deeplab predict`."""

import argparse
import json
import logging
import os
import signal
import sys

from models.config import BACKBONES, OUTPUT_STRIDES
from models.hparams import parse_assignment
from models.precision import AUTO, EXPORT_PRECISIONS
from pipeline import configs
from pipeline.cli import add_typed_flag

log = logging.getLogger(__name__)


def _size(text):
    """'513' or '513x385' -> (h, w)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with positive numbers, got {text!r}")
    return tuple(values)


def add_arguments(command, parser):
    if command == "export":
        src = parser.add_argument_group("model to export (one of)")
        src.add_argument(
            "--model",
            help="trained model: exported SavedModel dir, a Trainer Model artifact, .keras/.h5 file, or TF "
            "checkpoint (prefix or directory; hparams.json beside it or --hparams); a folder of numbered ones "
            "(OUT/pipeline_root/Trainer/model, a serving base path): the latest",
        )
        src.add_argument("--init", choices=["random"], help="export an untrained model of the given configuration")
        parser.add_argument("--hparams", help="hparams JSON (models/hparams.py format) to rebuild the model from")
        parser.add_argument("--backbone", default=None, choices=BACKBONES, help="with --init random")
        parser.add_argument(
            "--output-stride", type=int, default=None, choices=OUTPUT_STRIDES, help="with --init random"
        )
        parser.add_argument(
            "--num-classes", type=int, default=None, help="with --init random (default 21, or the --label-map's)"
        )
        parser.add_argument(
            "--label-map",
            default=None,
            help="the classes' names and colours served by the label_map signature: a built-in name (voc, "
            "cityscapes, ade20k) or a JSON/YAML label map file (default: the source's, else VOC for 21 classes); "
            "with --init random it sets num_classes",
        )
        parser.add_argument("--seed", type=int, default=0, help="with --init random: weight seed")
        parser.add_argument(
            "--model-arg",
            type=parse_assignment,
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="with --init random: a models.config.ModelConfig field (JSON value), repeatable",
        )
        parser.add_argument("--output", required=True, help="new SavedModel directory (e.g. serving/deeplab/3)")
        tta = parser.add_argument_group(
            "test-time augmentation baked into the serving signatures "
            "(default: the source export's settings, else whole image at scale 1)"
        )
        tta.add_argument("--scales", type=float, nargs="+", help="e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
        tta.add_argument("--flip", action="store_true", default=None, help="also predict the mirrored image")
        tta.add_argument("--mode", choices=["whole", "sliding"], help="whole image or sliding windows")
        tta.add_argument("--crop-size", type=_size, help="sliding-window size, N or HxW (the training crop)")
        parser.add_argument(
            "--precision",
            choices=(AUTO,) + EXPORT_PRECISIONS,
            default=AUTO,
            help="compute precision of the served graph (default auto: bfloat16 where this "
            "machine has native bfloat16, else float32; recorded in deeplab_export.json)",
        )
        parser.add_argument(
            "--warmup-size",
            type=_size,
            action="append",
            help="warm-up request image size N or HxW, repeatable (default: training crop)",
        )
        parser.add_argument("--no-warmup", action="store_true", help="write no warm-up requests")
        _add_tflite_arguments(parser)
    elif command == "serve":
        parser.add_argument(
            "--model-base-path",
            required=True,
            help="folder of numeric version folders (<base>/<version>/saved_model.pb)",
        )
        parser.add_argument("--model-name", default=configs.MODEL_NAME, help="served model name (default %(default)s)")
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to bind (default %(default)s; 0.0.0.0 to listen on all)"
        )
        parser.add_argument(
            "--grpc-port", type=int, default=configs.GRPC_PORT, help="gRPC port (default %(default)s; 0: any free port)"
        )
        parser.add_argument(
            "--rest-port",
            type=int,
            default=configs.REST_PORT,
            help="REST port (default %(default)s; 0: any free port; -1: no REST)",
        )
        parser.add_argument(
            "--poll-seconds",
            type=float,
            default=1.0,
            help="like --file_system_poll_wait_seconds: how often to look for new versions (default %(default)s; "
            "0: never)",
        )
        add_typed_flag(parser, "--max-message-mb", float, "largest request/response in MB", 64)
        add_typed_flag(
            parser,
            "--max-image-pixels",
            int,
            "largest decoded image (pixels), checked from the header before decoding",
            4096 * 4096,
        )
        add_typed_flag(parser, "--max-image-side", int, "largest image side in pixels", 8192)
        add_typed_flag(parser, "--threads", int, "gRPC worker threads", 8)
        parser.add_argument("--no-warmup", action="store_true", help="do not replay assets.extra warm-up requests")
        parser.add_argument(
            "--version-label", type=parse_assignment, action="append", default=[], metavar="LABEL=VERSION"
        )
        parser.add_argument("--ssl-cert", help="PEM certificate chain: serve gRPC over TLS (with --ssl-key)")
        parser.add_argument("--ssl-key", help="PEM private key of --ssl-cert")
        from serving.server import batching

        group = parser.add_argument_group(
            "server-side batching (like tensorflow_model_server --enable_batching with serving/config/"
            "batching.config): concurrent requests of the batched signatures run as one batch"
        )
        group.add_argument(
            "--no-batching",
            dest="enable_batching",
            action="store_false",
            help="run every request on its own (batching is on by default)",
        )
        for knob in batching.BatchingOptions.knobs():
            add_typed_flag(group, "--" + knob.name.replace("_", "-"), int, knob.metadata["help"], knob.default)
        group.add_argument(
            "--batch-signatures",
            nargs="+",
            default=list(batching.DEFAULT_BATCHED_SIGNATURES),
            metavar="SIGNATURE",
            help="signatures to batch ('*': all; requests with a scalar "
            "input or of other image sizes are never merged; default: %(default)s)",
        )
    elif command == "predict":
        from serving import predict, rest_client

        parser.add_argument(
            "--server",
            required=True,
            help=f"HOST:PORT of TF Serving: its gRPC port (default {configs.GRPC_PORT}), or its REST port "
            f"(default {configs.REST_PORT}) with --rest",
        )
        parser.add_argument("--rest", action="store_true", help="use the REST API (port 8501) instead of gRPC (8500)")
        parser.add_argument("--image", nargs="+", required=True, help="JPEG/PNG files")
        parser.add_argument(
            "--out",
            default="predictions",
            help="folder for the label and overlay PNGs and predictions.json (default %(default)s)",
        )
        parser.add_argument("--model-name", default=configs.MODEL_NAME)
        parser.add_argument("--version", type=int, default=None, help="model version (default: latest)")
        parser.add_argument("--version-label", default=None)
        parser.add_argument(
            "--signature",
            default=predict.SIGNATURES[0],
            choices=list(predict.SIGNATURES),
            help="serving_default sends the encoded file; predict_images the decoded float pixels",
        )
        parser.add_argument("--timeout", type=float, default=rest_client.DEFAULT_TIMEOUT, help="seconds per request")
        parser.add_argument(
            "--batch-size", type=int, default=predict.DEFAULT_BATCH_SIZE, help="images per request (serving_default)"
        )
        parser.add_argument("--max-message-mb", type=float, default=rest_client.DEFAULT_MAX_MESSAGE_MB)
        parser.add_argument("--root-cert", default=None, help="PEM CA certificate: use TLS (gRPC)")


def _add_tflite_arguments(parser):
    from models import tflite_gate

    group = parser.add_argument_group(
        "TFLite (--format tflite: --model is an exported SavedModel; writes OUTPUT/deeplab.tflite and "
        "deeplab.tflite.json only when the parity gate against the SavedModel passes)"
    )
    group.add_argument(
        "--format", choices=("savedmodel", "tflite"), default="savedmodel", help="what to export (default %(default)s)"
    )
    group.add_argument(
        "--quantize",
        choices=tflite_gate.QUANTIZE,
        default="none",
        help="none (float32), float16 (weights) or int8 (full-integer, uint8 input, calibrated on "
        f"{tflite_gate.MIN_REPRESENTATIVE} training images of --examples) (default %(default)s)",
    )
    add_typed_flag(
        group,
        "--input-size",
        int,
        "the fixed square input size S of the TFLite model",
        tflite_gate.DEFAULT_INPUT_SIZE,
    )
    group.add_argument(
        "--examples",
        help="ExampleGen Examples folder (holding Split-<name>/): the parity gate reads --eval-split, int8 "
        "calibration --train-split",
    )
    group.add_argument("--train-split", default=configs.TRAIN_SPLIT, help="(default %(default)s)")
    group.add_argument("--eval-split", default=configs.EVAL_SPLIT, help="(default %(default)s)")
    add_typed_flag(
        group, "--parity-images", int, "validation images of the parity gate", tflite_gate.DEFAULT_PARITY_IMAGES
    )
    add_typed_flag(
        group,
        "--min-agreement",
        float,
        "none/float16 gate: share of pixels labelled as the SavedModel labels them",
        tflite_gate.FLOAT_MIN_AGREEMENT,
    )
    group.add_argument(
        "--max-miou-drop",
        type=float,
        default=tflite_gate.INT8_MAX_MIOU_DROP,
        help="int8 gate: largest mIoU drop below the SavedModel's (default %(default)s = 1 point)",
    )


def main(command, args):
    return {"export": _export, "serve": _serve, "predict": _predict}[command](args)


# ---------------------------------------------------------------------------------------------


def _export(args):
    try:
        if args.format == "tflite":
            return _export_tflite(args)
        return _export_or_raise(args)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"deeplab export: {e}", file=sys.stderr)
        return 2


def _tta_from_flags(args, source_config=None):
    """The source export's TTA with the flags given on the command line applied on top."""
    from models.inference import TTAConfig

    tta = dict((source_config or {}).get("tta") or {})
    for key, value in (
        ("scales", args.scales),
        ("flip", args.flip),
        ("mode", args.mode),
        ("crop_size", list(args.crop_size) if args.crop_size else None),
    ):
        if value is not None:
            tta[key] = value
    return TTAConfig.from_json_dict(tta)


def _label_map_flag(args):
    """--label-map as a data.label_map.LabelMap (None when not given); its errors are ValueErrors."""
    if not getattr(args, "label_map", None):
        return None
    from data.label_map import LabelMap

    return LabelMap.resolve(args.label_map)


def _export_or_raise(args):
    from models import model_io
    from models.config import BUILD_OPTIONS, ModelConfig
    from models.export import export_serving_model
    from models.export_files import describe_signatures, read_export_config
    from models.precision import resolve_export_precision

    if bool(args.model) == bool(args.init):
        raise ValueError("pass exactly one of --model PATH or --init random")
    if os.path.exists(os.path.join(args.output, "saved_model.pb")):
        raise FileExistsError(f"{args.output} already holds a SavedModel; choose a new --output directory")
    source_config = None
    precision, _ = resolve_export_precision(args.precision)
    label_map = _label_map_flag(args)
    if args.init:
        _tta_from_flags(args)  # fail on bad TTA flags before spending time on building
        fields = {}
        if args.hparams:
            with open(args.hparams) as f:
                fields = model_io.model_config(json.load(f)).to_dict()
        fields.update(args.model_arg)  # build-only options (weight_decay, ...) do not change the network
        for key, value in (
            ("backbone", args.backbone),
            ("output_stride", args.output_stride),
            ("num_classes", args.num_classes),
        ):
            if value is not None:
                fields[key] = value
        if label_map is not None:
            explicit = args.num_classes if args.num_classes is not None else dict(args.model_arg).get("num_classes")
            if explicit is not None and int(explicit) != label_map.num_classes:
                raise ValueError(
                    f"num_classes {explicit} disagrees with --label-map {args.label_map} "
                    f"({label_map.num_classes} classes); drop --num-classes"
                )
            fields["num_classes"] = label_map.num_classes
        config = ModelConfig.from_dict(fields, ignore=BUILD_OPTIONS)
        log.info("Building an untrained DeepLab V3: %s", config)
        model = model_io.randomize_weights(model_io.build_model(config, precision), seed=args.seed)
        hparams = {}
        extra = {"source": f"init={args.init}", "init": args.init, "seed": args.seed}
    else:
        from models.cli import latest_model

        loaded = model_io.load_model(latest_model(args.model, "--model"), hparams=args.hparams, precision=precision)
        model, config, hparams, source_config = loaded
        if label_map is None:
            label_map = loaded.label_map  # the source's (None: VOC for 21 classes, models.export.default_label_map)
        extra = {"source": args.model}
    warmup = () if args.no_warmup else args.warmup_size
    export_serving_model(
        model,
        args.output,
        hparams=hparams,
        config=config,
        tta=_tta_from_flags(args, source_config),
        precision=args.precision,
        warmup_sizes=warmup,
        extra_config=extra,
        label_map=label_map,
    )
    exported = read_export_config(args.output)
    classes = exported.get("label_map") or {}
    print(
        f"Exported {args.output}: precision {exported['precision']}, TTA {json.dumps(exported['tta'])}, "
        f"label map {classes.get('name')} ({len(classes.get('classes') or [])} classes)"
    )
    for line in describe_signatures(args.output):
        print("  " + line)
    return 0


def port_taken(host, port):
    """The OSError binding host:port now would raise (EADDRINUSE: another server has it), else None."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free to listen on
        try:
            probe.bind((host, port))
        except OSError as e:
            return e
    return None


def _check_ports(args):
    """Fails in a line naming the port and its flag when a port is taken, before any model is loaded."""
    for api, port, flag in (("gRPC", args.grpc_port, "--grpc-port"), ("REST", args.rest_port, "--rest-port")):
        if port is None or port <= 0:
            continue
        error = port_taken(args.host, port)
        if error is not None:
            raise SystemExit(
                f"deeplab serve: {api} port {port} on {args.host} is not free ({error.strerror}: another server, "
                f"perhaps another `deeplab serve`, holds it); stop that one or choose another port with "
                f"{flag} PORT (0: any free port)"
            )


def _export_tflite(args):
    """`deeplab export --format tflite`: models.tflite_export.export_tflite with the flags; 1 when the parity
    gate fails (nothing written, the figures printed)."""
    from models import tflite_export
    from models.cli import latest_model, resolve_examples

    if not args.model or args.init:
        raise ValueError("--format tflite converts an exported SavedModel: pass --model DIR (not --init)")
    model_dir = latest_model(args.model, "--model")
    if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"--model {model_dir} holds no saved_model.pb (export a SavedModel first)")
    if not args.examples:
        raise ValueError(
            "--format tflite needs --examples (an ExampleGen Examples folder): the parity gate runs on its "
            f"{args.eval_split!r} split" + (", int8 calibration on its train split" if args.quantize == "int8" else "")
        )
    split = os.path.join(resolve_examples(args.examples, "export"), "Split-{}")
    try:
        path, metadata = tflite_export.export_tflite(
            model_dir,
            args.output,
            quantize=args.quantize,
            input_size=args.input_size,
            representative_examples=split.format(args.train_split) if args.quantize == "int8" else None,
            parity_examples=split.format(args.eval_split),
            max_parity_images=args.parity_images,
            min_agreement=args.min_agreement,
            max_miou_drop=args.max_miou_drop,
        )
    except tflite_export.ParityError as e:
        print(f"deeplab export: {e}", file=sys.stderr)
        print(json.dumps({k: v for k, v in e.report["parity"].items() if k != "per_image"}), file=sys.stderr)
        return 1
    parity = metadata["parity"]
    print(
        f"Exported {path} ({metadata['bytes'] / 1e6:.1f} MB, {args.quantize}, input "
        f"{metadata['inputs'][0]['shape']} {metadata['inputs'][0]['dtype']}): parity on {parity['images']} images: "
        f"pixel agreement {parity['pixel_agreement']:.4f}, mIoU {parity['miou_tflite']} vs SavedModel "
        f"{parity['miou_saved_model']} ({parity['rule']}: passed)"
    )
    return 0


def _serve(args):
    _check_ports(args)
    from serving.server import BatchingOptions, ModelServer

    try:
        batching = BatchingOptions(
            enabled=args.enable_batching,
            signatures=args.batch_signatures,
            **{knob.name: getattr(args, knob.name) for knob in BatchingOptions.knobs()},
        )
    except ValueError as e:
        print(f"deeplab serve: {e}", file=sys.stderr)
        return 2
    server = ModelServer(
        args.model_base_path,
        args.model_name,
        host=args.host,
        grpc_port=args.grpc_port,
        rest_port=None if args.rest_port < 0 else args.rest_port,
        poll_seconds=args.poll_seconds,
        max_message_mb=args.max_message_mb,
        max_image_pixels=args.max_image_pixels,
        max_image_side=args.max_image_side,
        threads=args.threads,
        warmup=not args.no_warmup,
        version_labels={k: int(v) for k, v in args.version_label},
        ssl_cert=args.ssl_cert,
        ssl_key=args.ssl_key,
        batching=batching,
    )
    # Kubernetes and docker stop containers with SIGTERM: shut down cleanly as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    server.start()
    if not server.manager.available_versions():
        log.warning(
            "No version of %s is loaded yet; requests get NOT_FOUND until one appears under %s",
            args.model_name,
            args.model_base_path,
        )
    # One machine-readable line for scripts/tests that start the server with port 0.
    print(json.dumps({"grpc_port": server.grpc_port, "rest_port": server.rest_port}), flush=True)
    apis = [f"gRPC {args.host}:{server.grpc_port}"]
    if server.rest_port:
        apis.append(f"REST {args.host}:{server.rest_port}")
    print(f"serving {args.model_name!r} from {args.model_base_path} on {' and '.join(apis)}; Ctrl-C stops", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        log.info("Interrupted; shutting down")
    finally:
        server.stop()
    return 0


def _predict(args):
    from serving.predict import CLIENT_OPTIONS, predict_files

    client_options = {name: getattr(args, name) for name in CLIENT_OPTIONS}
    return predict_files(
        args.server, args.image, args.out, signature=args.signature, batch_size=args.batch_size, **client_options
    )

"""`deeplab export`, `deeplab serve` and `deeplab predict`."""
import argparse
import json
import logging
import os
import signal
import sys

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


def _key_value(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        value = json.loads(value)
    except ValueError:
        pass  # plain string
    return key, value


def add_arguments(command, parser):
    if command == "export":
        src = parser.add_argument_group("model to export (one of)")
        src.add_argument("--model", help="trained model: exported SavedModel dir, .keras/.h5 file, or TF checkpoint "
                                         "(prefix or directory; hparams.json beside it or --hparams)")
        src.add_argument("--init", choices=["random"], help="export an untrained model of the given configuration")
        parser.add_argument("--hparams", help="hparams JSON (models/hparams.py format) to rebuild the model from")
        parser.add_argument("--backbone", default=None, help="with --init random: mobilenet_v2, resnet_v2_50, resnet_v2_101")
        parser.add_argument("--output-stride", type=int, default=None, help="with --init random: 8, 16 or 32")
        parser.add_argument("--num-classes", type=int, default=None, help="with --init random (default 21)")
        parser.add_argument("--seed", type=int, default=0, help="with --init random: weight seed")
        parser.add_argument("--model-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                            help="with --init random: extra build_deeplab_v3 argument (JSON value), repeatable")
        parser.add_argument("--output", required=True, help="new SavedModel directory (e.g. serving/deeplab/3)")
        tta = parser.add_argument_group("test-time augmentation baked into the serving signatures "
                                        "(default: the source export's settings, else whole image at scale 1)")
        tta.add_argument("--scales", type=float, nargs="+", help="e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
        tta.add_argument("--flip", action="store_true", default=None, help="also predict the mirrored image")
        tta.add_argument("--mode", choices=["whole", "sliding"], help="whole image or sliding windows")
        tta.add_argument("--crop-size", type=_size, help="sliding-window size, N or HxW (the training crop)")
        parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                            help="compute precision of the served graph (default auto: bfloat16 where this "
                                 "machine has native bfloat16, else float32; recorded in deeplab_export.json)")
        parser.add_argument("--warmup-size", type=_size, action="append",
                            help="warm-up request image size N or HxW, repeatable (default: training crop)")
        parser.add_argument("--no-warmup", action="store_true", help="write no warm-up requests")
    elif command == "serve":
        parser.add_argument("--model-base-path", required=True,
                            help="folder of numeric version folders (<base>/<version>/saved_model.pb)")
        parser.add_argument("--model-name", default="deeplab")
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 to listen on all)")
        parser.add_argument("--grpc-port", type=int, default=8500, help="0: any free port")
        parser.add_argument("--rest-port", type=int, default=8501, help="0: any free port; -1: no REST")
        parser.add_argument("--poll-seconds", type=float, default=1.0,
                            help="like --file_system_poll_wait_seconds: how often to look for new versions (0: never)")
        parser.add_argument("--max-message-mb", type=float, default=64, help="largest request/response")
        parser.add_argument("--max-image-pixels", type=int, default=4096 * 4096,
                            help="largest decoded image (pixels), checked from the header before decoding")
        parser.add_argument("--max-image-side", type=int, default=8192)
        parser.add_argument("--threads", type=int, default=8, help="gRPC worker threads")
        parser.add_argument("--no-warmup", action="store_true", help="do not replay assets.extra warm-up requests")
        parser.add_argument("--version-label", type=_key_value, action="append", default=[], metavar="LABEL=VERSION")
        parser.add_argument("--ssl-cert", help="PEM certificate chain: serve gRPC over TLS (with --ssl-key)")
        parser.add_argument("--ssl-key", help="PEM private key of --ssl-cert")
        from serving.server import batching
        group = parser.add_argument_group(
            "server-side batching (like tensorflow_model_server --enable_batching with serving/config/"
            "batching.config): concurrent requests of the batched signatures run as one batch")
        group.add_argument("--no-batching", dest="enable_batching", action="store_false",
                           help="run every request on its own (batching is on by default)")
        group.add_argument("--max-batch-size", type=int, default=batching.DEFAULT_MAX_BATCH_SIZE,
                           help="most images in one merged batch")
        group.add_argument("--batch-timeout-micros", type=int, default=batching.DEFAULT_BATCH_TIMEOUT_MICROS,
                           help="how long the first request of a batch waits for others (only while other "
                                "requests are in flight: a lone client is not delayed)")
        group.add_argument("--num-batch-threads", type=int, default=batching.DEFAULT_NUM_BATCH_THREADS,
                           help="batches run in parallel")
        group.add_argument("--max-enqueued-batches", type=int, default=batching.DEFAULT_MAX_ENQUEUED_BATCHES,
                           help="queue bound in batches; beyond it requests get UNAVAILABLE")
        group.add_argument("--batch-signatures", nargs="+", default=list(batching.DEFAULT_BATCHED_SIGNATURES),
                           metavar="SIGNATURE", help="signatures to batch ('*': all; requests with a scalar "
                                                     "input or of other image sizes are never merged)")
    elif command == "predict":
        parser.add_argument("--server", required=True, help="HOST:PORT of TF Serving (gRPC, or REST with --rest)")
        parser.add_argument("--rest", action="store_true", help="use the REST API instead of gRPC")
        parser.add_argument("--image", nargs="+", required=True, help="JPEG/PNG files")
        parser.add_argument("--out", default="predictions", help="folder for label/overlay PNGs and predictions.json")
        parser.add_argument("--model-name", default="deeplab")
        parser.add_argument("--version", type=int, default=None, help="model version (default: latest)")
        parser.add_argument("--version-label", default=None)
        parser.add_argument("--signature", default="serving_default", choices=["serving_default", "predict_images"],
                            help="serving_default sends the encoded file; predict_images the decoded float pixels")
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
        parser.add_argument("--batch-size", type=int, default=4, help="images per request (serving_default)")
        parser.add_argument("--max-message-mb", type=float, default=64)
        parser.add_argument("--root-cert", default=None, help="PEM CA certificate: use TLS (gRPC)")


def main(command, args):
    return {"export": _export, "serve": _serve, "predict": _predict}[command](args)


# ---------------------------------------------------------------------------------------------

def _export(args):
    try:
        return _export_or_raise(args)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"deeplab export: {e}", file=sys.stderr)
        return 2


def _tta_from_flags(args, source_config=None):
    """The source export's TTA with the flags given on the command line applied on top."""
    from models.inference import TTAConfig
    tta = dict((source_config or {}).get("tta") or {})
    for key, value in (("scales", args.scales), ("flip", args.flip), ("mode", args.mode),
                       ("crop_size", list(args.crop_size) if args.crop_size else None)):
        if value is not None:
            tta[key] = value
    return TTAConfig.from_json_dict(tta)


def _export_or_raise(args):
    from models import export
    if bool(args.model) == bool(args.init):
        raise ValueError("pass exactly one of --model PATH or --init random")
    if os.path.exists(os.path.join(args.output, "saved_model.pb")):
        raise FileExistsError(f"{args.output} already holds a SavedModel; choose a new --output directory")
    source_config = None
    if args.init:
        _tta_from_flags(args)  # fail on bad TTA flags before spending time on building
        kwargs = dict(args.model_arg)
        if args.hparams:
            with open(args.hparams) as f:
                kwargs = {**export.model_kwargs(json.load(f)), **kwargs}
        for key, value in (("backbone", args.backbone), ("output_stride", args.output_stride),
                           ("num_classes", args.num_classes)):
            if value is not None:
                kwargs[key] = value
        log.info("Building an untrained DeepLab V3 with %s", kwargs)
        model = export.randomize_weights(export.build_model(kwargs, args.precision or "float32"), seed=args.seed)
        hparams = {"model": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
                   "init": "random", "seed": args.seed}
    else:
        model, hparams, source_config = export.load_trained_model(args.model, hparams=args.hparams,
                                                                   precision=args.precision)
    warmup = () if args.no_warmup else args.warmup_size
    export.export_serving_model(model, args.output, hparams=hparams, tta=_tta_from_flags(args, source_config),
                                precision=args.precision, warmup_sizes=warmup,
                                extra_config={"source": args.model or f"init={args.init}"})
    config = export.read_export_config(args.output)
    print(f"Exported {args.output}: precision {config['precision']}, TTA {json.dumps(config['tta'])}")
    for line in export.describe_signatures(args.output):
        print("  " + line)
    return 0


def _serve(args):
    from serving.server import BatchingOptions, ModelServer
    try:
        batching = BatchingOptions(args.enable_batching, args.max_batch_size, args.batch_timeout_micros,
                                   args.num_batch_threads, args.max_enqueued_batches, args.batch_signatures)
    except ValueError as e:
        print(f"deeplab serve: {e}", file=sys.stderr)
        return 2
    server = ModelServer(args.model_base_path, args.model_name, host=args.host, grpc_port=args.grpc_port,
                         rest_port=None if args.rest_port < 0 else args.rest_port,
                         poll_seconds=args.poll_seconds, max_message_mb=args.max_message_mb,
                         max_image_pixels=args.max_image_pixels, max_image_side=args.max_image_side,
                         threads=args.threads, warmup=not args.no_warmup,
                         version_labels={k: int(v) for k, v in args.version_label},
                         ssl_cert=args.ssl_cert, ssl_key=args.ssl_key, batching=batching)
    # Kubernetes and docker stop containers with SIGTERM: shut down cleanly as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    server.start()
    if not server.manager.available_versions():
        log.warning("No version of %s is loaded yet; requests get NOT_FOUND until one appears under %s",
                    args.model_name, args.model_base_path)
    # One machine-readable line for scripts/tests that start the server with port 0.
    print(json.dumps({"grpc_port": server.grpc_port, "rest_port": server.rest_port}), flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        log.info("Interrupted; shutting down")
    finally:
        server.stop()
    return 0


def _predict(args):
    import numpy as np
    from PIL import Image

    from data.synthetic import encode_palette_png
    from data.visualize import overlay
    from data.voc import VOC_CLASSES
    from serving.rest_client import ServingClientError

    if args.rest:
        from serving.rest_client import RestClient
        client = RestClient(args.server, args.model_name, version=args.version, version_label=args.version_label,
                            timeout=args.timeout)
    else:
        from serving.grpc_client import GrpcClient
        client = GrpcClient(args.server, args.model_name, version=args.version, version_label=args.version_label,
                            timeout=args.timeout, max_message_mb=args.max_message_mb, root_cert=args.root_cert)
    encoded, images = [], []
    for path in args.image:
        try:
            with open(path, "rb") as f:
                encoded.append(f.read())
            images.append(np.asarray(Image.open(path).convert("RGB")))
        except (OSError, ValueError) as e:
            print(f"deeplab predict: cannot read image {path}: {e}", file=sys.stderr)
            return 2
    try:
        if args.signature == "serving_default":
            label_maps = [m for m, _ in client.segment(encoded, batch_size=args.batch_size)]
        else:
            label_maps = [client.predict_images(image) for image in images]
    except ServingClientError as e:
        print(f"deeplab predict: {e}", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    report = []
    for path, image, label_map in zip(args.image, images, label_maps):
        stem = os.path.splitext(os.path.basename(path))[0]
        if label_map.shape != image.shape[:2]:
            print(f"deeplab predict: {path}: server returned a {label_map.shape} map for a "
                  f"{image.shape[:2]} image", file=sys.stderr)
            return 1
        labels_png = os.path.join(args.out, f"{stem}_labels.png")
        overlay_png = os.path.join(args.out, f"{stem}_overlay.png")
        with open(labels_png, "wb") as f:
            f.write(encode_palette_png(label_map.astype(np.uint8)))
        Image.fromarray(overlay(image, label_map.astype(np.uint8))).save(overlay_png)
        ids, counts = np.unique(label_map, return_counts=True)
        shares = {VOC_CLASSES[i] if i < len(VOC_CLASSES) else str(i): round(float(c) / label_map.size, 4)
                  for i, c in sorted(zip(ids.tolist(), counts.tolist()), key=lambda t: -t[1])}
        print(f"{path} ({image.shape[0]}x{image.shape[1]}): " +
              ", ".join(f"{name} {share:.1%}" for name, share in shares.items()))
        report.append({"image": path, "height": image.shape[0], "width": image.shape[1], "class_share": shares,
                       "labels_png": labels_png, "overlay_png": overlay_png})
    with open(os.path.join(args.out, "predictions.json"), "w") as f:
        json.dump({"server": args.server, "api": "rest" if args.rest else "grpc", "model": args.model_name,
                   "signature": args.signature, "images": report}, f, indent=2)
    print(f"Wrote label maps, overlays and predictions.json to {args.out}")
    return 0

"""Helpers shared by several test modules (fixtures live in conftest.py)."""

# The pipeline's components in the order LocalDagRunner runs them (a topological order of the DAG).
PIPELINE_STAGES = (
    "VocExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "SchemaGate",
    "LabelStatsGen",
    "Transform",
    "Trainer",
    "latest_blessed_model_resolver",
    "MiouEvaluator",
    "AtomicPusher",
)

# Hyperparameters of a MobileNetV2 DeepLab small enough to train a few steps on a CPU in seconds.
TINY_TRAIN = dict(alpha=0.35, aspp_filters=8, crop_size=33, batch_size=2, precision="float32")

# A five-class label map in JSON form (Cityscapes colours for the objects; white masks pixels are ignored).
FIVE_CLASSES = {
    "name": "five",
    "classes": [
        {"id": 0, "name": "background", "color": [0, 0, 0]},
        {"id": 1, "name": "road", "color": [128, 64, 128]},
        {"id": 2, "name": "car", "color": [0, 0, 142]},
        {"id": 3, "name": "tree", "color": [107, 142, 35]},
        {"id": 4, "name": "sky", "color": [70, 130, 180]},
    ],
    "palette": [{"color": [255, 255, 255], "id": 255}],
}

# A few small images in the generic layout with RGB masks: data.synthetic.generate_dataset's arguments.
TINY_GENERIC = dict(layout="generic", num_train=4, num_val=2, seed=1, min_size=32, max_size=48, rgb_masks=True)


def tiny_generic_dataset(path, label_map, **overrides):
    """Root of a TINY_GENERIC synthetic dataset of `label_map` (with `overrides`) written under `path`."""
    from data.synthetic import generate_dataset

    return generate_dataset(path, label_map=label_map, **{**TINY_GENERIC, **overrides})


def export_random_model(out, *flags):
    """Exit code of `deeplab export --init random` writing a tiny untrained MobileNetV2 DeepLab to `out`."""
    import runner

    return runner.main(
        ["export", "--init", "random", "--backbone", "mobilenet_v2", *flags]
        + ["--model-arg", "alpha=0.35", "--model-arg", "aspp_filters=8", "--output", out, "--no-warmup"]
    )

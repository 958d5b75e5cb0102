"""Helpers shared by several test modules (fixtures live in conftest.py)."""

# The pipeline's components in the order LocalDagRunner runs them (a topological order of the DAG).
PIPELINE_STAGES = (
    "VocExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "SchemaGate",
    "LabelStatsGen",
    "Trainer",
    "latest_blessed_model_resolver",
    "MiouEvaluator",
    "AtomicPusher",
)

# Hyperparameters of a MobileNetV2 DeepLab small enough to train a few steps on a CPU in seconds.
TINY_TRAIN = dict(alpha=0.35, aspp_filters=8, crop_size=33, batch_size=2, precision="float32")


def export_random_model(out, *flags):
    """Exit code of `deeplab export --init random` writing a tiny untrained MobileNetV2 DeepLab to `out`."""
    import runner

    return runner.main(
        ["export", "--init", "random", "--backbone", "mobilenet_v2", *flags]
        + ["--model-arg", "alpha=0.35", "--model-arg", "aspp_filters=8", "--output", out, "--no-warmup"]
    )

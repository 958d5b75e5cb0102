"""The evaluator on a real (tiny, untrained) DeepLab V3 exported by models.export: the contract
between models.deeplab -> models.export (`logits` signature) -> evaluator holds, and the Beam
result equals predicting with the Keras model directly through models.inference."""

import numpy as np
import pytest

from components.miou_evaluator import beam_eval, metrics
from components.miou_evaluator.evaluate import evaluate
from models.inference import TTAConfig, predict_labels
from tests.test_eval_support import write_examples


@pytest.mark.slow
def test_exported_deeplab_matches_keras_predictions(tmp_path):
    from models.config import ModelConfig
    from models.deeplab import build_deeplab_v3
    from models.export import export_serving_model

    model = build_deeplab_v3(ModelConfig(backbone="mobilenet_v2", alpha=0.35, aspp_filters=16, output_stride=16))
    tta = TTAConfig(scales=(0.75, 1.0), flip=True)
    export_dir = export_serving_model(model, str(tmp_path / "model" / "Format-Serving"), tta=tta, warmup_sizes=())
    samples = write_examples(str(tmp_path / "examples" / "Split-val"), 3)

    # tta="export": the evaluator reads the TTA baked into the serving signatures.
    result = evaluate(
        str(tmp_path / "model"),
        str(tmp_path / "out"),
        tta="export",
        num_gallery=1,
        examples_pattern=beam_eval.resolve_examples(tmp_path / "examples", "val"),
    )

    expected = 0
    for image, label, _ in samples:
        pred = predict_labels(
            lambda x: model(x, training=False), image[None].astype(np.float32), **tta.kwargs()
        ).numpy()[0]
        expected = expected + metrics.confusion_matrix(label, pred)
    got = np.array(result["confusion_matrix"])
    assert got.sum() == expected.sum() == sum(int((label != 255).sum()) for _, label, _ in samples)
    # Same float32 graph math; allow a handful of argmax near-ties to flip between the two paths.
    assert np.abs(got - expected).sum() <= 0.002 * expected.sum()
    assert result["model"]["path"] == export_dir
    assert result["tta"] == tta.to_json_dict()

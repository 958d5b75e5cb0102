import os
import pathlib

import pytest

from data import use_legacy_keras

use_legacy_keras()  # the project's one place for TF_USE_LEGACY_KERAS (data/__init__.py)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
VOC_SAMPLE = REPO.parent / "shared" / "voc2012-sample"
SEED_SPLITS = REPO.parent / "shared" / "seed-splits"


@pytest.fixture(scope="session")
def voc_sample_root():
    """The 19 real VOC 2012 pairs in ../shared (CI has them); tests using it skip where it is absent."""
    if not (VOC_SAMPLE / "JPEGImages").is_dir():
        pytest.skip("../shared/voc2012-sample is not present")
    return VOC_SAMPLE


@pytest.fixture(scope="session")
def custom_train_list():
    path = SEED_SPLITS / "custom_train.txt"
    if not path.is_file():
        pytest.skip("../shared/seed-splits/custom_train.txt is not present")
    return path


@pytest.fixture(scope="module")
def in_process_beam():
    """`deeplab` CLI flags for in-process Beam (one worker, in memory). Local runs with the DirectRunner skip TFX's
    per-component sdist themselves (pipeline.pipeline.run_local)."""
    return ["--beam-arg=--direct_running_mode=in_memory", "--beam-arg=--direct_num_workers=1"]

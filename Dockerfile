# The pipeline image: what Kubeflow tasks run (`deeplab compile --image IMAGE` sets it as KubeflowV2DagRunner's
# default_image) and what Beam workers on Dataflow run (`--beam-arg=--sdk_container_image=IMAGE`).
# Build it with `make image IMAGE=gcr.io/PROJECT/deeplab-tfx:TAG`.
#
# Base: python:3.11-slim with the same tfx==1.16.0 stack as `make setup`, not tensorflow/tfx:1.16.0 itself.
# requirements.lock is resolved for Python 3.11 (`make lock`) and is what our tests run against; the tfx image is
# not built from it. pip cannot resolve TFX 1.16 on Python 3.11, so, exactly like the Makefile's setup target, uv
# installs the lock (fully pinned: nothing left to resolve), then the project itself with --no-deps. The image
# thus has the same tfx==1.16.0 (TensorFlow, Beam, ML Metadata, KFP) as `make setup`, which is what tasks need.
# tests/test_dockerfile.py checks this file against requirements.lock, setup.py and the Makefile.

# Beam's worker boot program, for use as a Dataflow custom SDK container; same Beam and Python as the lock.
FROM apache/beam_python3.11_sdk:2.59.0 AS beam_sdk

FROM python:3.11-slim

# TFX 1.16 needs Keras 2: tf_keras behind tf.keras in every process (Kubeflow executors and Beam workers).
ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Same uv as the Makefile.
RUN python -m pip install --no-cache-dir "uv==0.13.9"

WORKDIR /pipeline

# The dependency layer: rebuilt only when the lock (or setup.py) changes, not on every code edit.
# --compile-bytecode: every Beam worker process imports Beam afresh; .pyc files save seconds per process.
COPY requirements.lock setup.py ./
RUN python -m uv pip install --system --no-cache --compile-bytecode -r requirements.lock

# The project: setup.py's packages and py_modules (find_packages: pipeline, components, models, data, serving;
# py_modules: runner). They also stay here, beside setup.py, for Beam's `--setup_file=./setup.py`.
COPY runner.py ./
COPY pipeline/ pipeline/
COPY components/ components/
COPY models/ models/
COPY data/ data/
COPY serving/ serving/
RUN python -m uv pip install --system --no-cache --compile-bytecode --no-deps . \
    && rm -rf build *.egg-info \
    && deeplab --help >/dev/null \
    && cd / && python -c "import tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor, models.trainer_module"

COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam

# Dataflow starts the worker boot program; Kubeflow tasks set their own command
# (`python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor ...`), which replaces it.
ENTRYPOINT ["/opt/apache/beam/boot"]

from data import use_legacy_keras

use_legacy_keras()  # before anything here imports TensorFlow (see data/__init__.py)

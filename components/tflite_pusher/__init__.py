"""TflitePusher: converts the pushed model to TFLite, gates it on parity with the SavedModel and writes the .tflite
beside the pushed SavedModel; see executor.py."""

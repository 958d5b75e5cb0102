"""VocExampleGen: custom TFX ExampleGen (Beam) for Pascal VOC 2012 / SBD; see component.py."""

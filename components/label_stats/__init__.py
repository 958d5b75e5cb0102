"""LabelStatsGen: per-split class pixel histogram of segmentation Examples; see component.py."""

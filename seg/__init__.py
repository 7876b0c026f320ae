"""seg: segmentation under class imbalance, done right and measured."""

__version__ = "0.1.0"

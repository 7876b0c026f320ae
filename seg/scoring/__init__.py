"""Scoring predictions: integer counts -> Dice/IoU (metrics), threshold policies and the tuned-threshold
histograms (policies, thresholds), calibration sums -> ECE (calibration), and the validation accumulator
that combines them on the device (validation)."""

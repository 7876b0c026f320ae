"""Comparing weighting strategies: experiment files and their plan (experiment), running the grid (grid),
statistics over seeds (aggregate), results.md/csv and README blocks (markdown, report), W&B sweep files (sweeps)."""

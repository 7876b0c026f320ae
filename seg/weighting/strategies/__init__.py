"""The built-in weighting strategies, one per module; each registers itself with seg.weighting.registry.

The registry imports every module of this package on its first look-up: a new strategy is a new module here.
"""

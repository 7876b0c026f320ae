"""The commands: train, evaluate, audit, compare, benchmark; each a ``main(argv) -> int`` that scripts/*.py call.

An app parses its arguments, loads the config once and calls one function below it; ``seg.cli.run_main``
turns user errors into one line and the exit codes of the README (0 done, 1 error, 2 bad input, 3 diverged).
"""

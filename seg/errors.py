"""The errors a user can cause, and the exit code each one maps to (see seg.cli.run_main).

- ConfigError (exit 2): a bad config file, key, value, flag or checkpoint; the message names it.
- DataError (exit 2): bad input data; the message names the file and the offending value.
- TrainingDiverged (exit 3): a non-finite loss; the message names the epoch, the step and the
  last good checkpoint.
"""


class ConfigError(ValueError):
    """A user mistake in a config file, override, flag or referenced file; the message names it."""


class DataError(ValueError):
    """Bad input data; the message names the file and the offending value."""


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite (NaN or inf); nothing non-finite was saved."""

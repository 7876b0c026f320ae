"""The errors a user can cause, and the exit code each one maps to (see seg.cli.run_main).

- ConfigError (exit 2): a bad config file, key, value, flag or checkpoint; the message names it.
- DataError (exit 2): bad input data; the message names the file and the offending value.
- TrainingDiverged (exit 3): a non-finite loss; the message names the epoch, the step and the
  last good checkpoint.
- PeerFailed (the failing process's code): under torchrun, another process failed and printed the
  error; this one prints nothing.
"""


class ConfigError(ValueError):
    """A user mistake in a config file, override, flag or referenced file; the message names it."""


class DataError(ValueError):
    """Bad input data; the message names the file and the offending value."""


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite (NaN or inf); nothing non-finite was saved."""


class PeerFailed(Exception):
    """Another process of this distributed job failed and reported the error itself; this one exits
    with the same ``code`` and prints nothing."""

    def __init__(self, code: int) -> None:
        super().__init__(f"another process of this job failed (exit code {code})")
        self.code = code


def exit_code(err: BaseException) -> int:
    """The exit code an error maps to: 2 user mistakes, 3 divergence, 130 interrupted, 1 anything else."""
    if isinstance(err, PeerFailed):
        return err.code
    if isinstance(err, (ConfigError, DataError)):
        return 2
    if isinstance(err, TrainingDiverged):
        return 3
    if isinstance(err, KeyboardInterrupt):
        return 130
    if isinstance(err, SystemExit):
        return err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
    return 1

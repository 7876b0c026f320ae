"""What every script shares: argument parsing, error handling with exit codes, a quiet environment.

Exit codes: 0 success; 2 bad config or bad input (one line naming the file, key or value,
no traceback unless --debug); 3 training diverged (a non-finite loss; one line naming the
epoch, step and last good checkpoint); 1 anything else; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable

from seg.errors import ConfigError, DataError, PeerFailed, TrainingDiverged, exit_code
from seg.launch import environment_rank
from seg.provenance import record_command

USER_ERRORS = (ConfigError, DataError)
# Under torchrun every process raises these alike (a bad config, a collective divergence): rank 0 reports them.
SAME_ON_EVERY_RANK = (ConfigError, TrainingDiverged)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: a bad flag is a user error (exit 2), not a usage block."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum`` (the message names the bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def quiet_environment() -> None:
    """Keep libraries offline and quiet unless the user asked otherwise."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def add_override_argument(parser: argparse.ArgumentParser, help: str = "override a config key, repeatable") -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``: dotted keys, YAML values."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 600 else text[:600] + " ..."


def _report(err: BaseException, debug: bool, message: str) -> None:
    """Print ``message`` (the traceback too with --debug), unless another process of the job reports it."""
    if environment_rank() > 0 and isinstance(err, SAME_ON_EVERY_RANK):
        return
    if debug:
        traceback.print_exc()
    print(message, file=sys.stderr)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None, program: str | None = None) -> int:
    """Run ``main(argv)`` and map errors to exit codes: user mistakes -> 2, divergence -> 3, else 1.

    ``program`` is the command provenance records (the console commands pass theirs, e.g. ``seg-train``);
    by default the app module's ``SCRIPT`` (``scripts/train.py``), else the file that defines ``main``.
    Under torchrun, an error every process raises alike is printed by rank 0 only, and a process whose
    peer failed (:class:`PeerFailed`) exits with the peer's code, silently.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    module = sys.modules.get(getattr(main, "__module__", ""))
    program = (
        program
        or getattr(module, "SCRIPT", None)
        or getattr(getattr(main, "__code__", None), "co_filename", sys.argv[0])
    )
    record_command([str(program), *argv])
    try:
        return int(main(argv) or 0)
    except SystemExit as exit_:  # --help, or a library calling sys.exit
        return exit_code(exit_)
    except PeerFailed as err:
        return err.code
    except (*USER_ERRORS, TrainingDiverged) as err:
        _report(err, debug, f"error: {_one_line(err)}")
        return exit_code(err)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence of a script
        if debug:
            traceback.print_exc()
        else:
            print(
                f"error: {type(err).__name__}: {_one_line(err)} (run with --debug for the traceback)", file=sys.stderr
            )
        return 1

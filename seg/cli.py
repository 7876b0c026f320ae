"""What every script shares: error handling with exit codes, and config loading.

Exit codes (CONTRACT.md): 0 success, 2 bad config or bad input (one line naming the
file/key/value, no traceback unless --debug), 1 anything else.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable

from seg.config import ConfigError
from seg.data.masks import DataError

USER_ERRORS = (ConfigError, DataError)


def quiet_environment() -> None:
    """Keep libraries offline and quiet unless the user asked otherwise."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main(argv)`` and map errors to exit codes: user mistakes -> 2, anything else -> 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return int(main(argv) or 0)
    except USER_ERRORS as err:
        if debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence of a script
        if debug:
            traceback.print_exc()
        else:
            print(f"error: {type(err).__name__}: {err} (run with --debug for the traceback)", file=sys.stderr)
        return 1

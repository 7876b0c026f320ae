"""Tests for seg/cli.py and seg/errors.py: run_main's exit codes and one-line errors, the argparse subclass,
at_least, the shared flags. (tests/test_bad_input.py checks the same contract through every app.)"""

import argparse
import os

import pytest

from seg import provenance
from seg.cli import (
    ArgumentParser,
    add_common_arguments,
    add_override_argument,
    at_least,
    quiet_environment,
    run_main,
)
from seg.errors import ConfigError, DataError, TrainingDiverged


@pytest.fixture(autouse=True)
def _restore_command(monkeypatch):
    """run_main records the command for provenance (a module global): put it back after each test."""
    monkeypatch.setattr(provenance, "_COMMAND", provenance._COMMAND)


def raising(error: BaseException):
    def main(argv):
        raise error

    return main


def test_errors_are_value_and_runtime_errors():
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)
    assert issubclass(TrainingDiverged, RuntimeError) and not issubclass(TrainingDiverged, ValueError)


def test_run_main_returns_main_s_code():
    assert run_main(lambda argv: None, []) == 0
    assert run_main(lambda argv: 4, []) == 4
    seen = []
    assert run_main(lambda argv: seen.append(argv), ["--a", "b"]) == 0 and seen == [["--a", "b"]]


def test_run_main_reads_sys_argv_and_records_the_command(monkeypatch):
    monkeypatch.setattr("sys.argv", ["prog", "--n", "two words"])
    seen = []

    def main(argv):
        seen.append(argv)
        return 0

    assert run_main(main) == 0 and seen == [["--n", "two words"]]
    # no SCRIPT in this module: the file that defines main, relative to the working directory (the repository)
    assert provenance.command_line() == "python tests/test_cli.py --n 'two words'"


def test_run_main_records_the_program_it_is_given_over_the_apps_script():
    from seg.apps import train as train_app

    assert train_app.SCRIPT == "scripts/train.py"  # the default: the command as typed at the repository root
    assert run_main(train_app.main, ["--help"], program="seg-train") == 0  # what the console command passes
    assert provenance.command_line() == "seg-train --help"
    assert run_main(train_app.main, ["--help"]) == 0
    assert provenance.command_line() == "python scripts/train.py --help"


@pytest.mark.parametrize(
    "error, code",
    [
        (ConfigError("train.lr: must be positive"), 2),
        (DataError("masks/a.png: value 128"), 2),
        (TrainingDiverged("training diverged: non-finite loss in epoch 2"), 3),
    ],
)
def test_user_errors_and_divergence_are_one_line_with_their_exit_code(error, code, capsys):
    assert run_main(raising(error), ["--x"]) == code
    assert capsys.readouterr().err == f"error: {error}\n"


def test_a_multi_line_message_is_joined_into_one_line_and_a_long_one_is_cut(capsys):
    assert run_main(raising(ConfigError("first line\n   second\tline  ")), []) == 2
    assert capsys.readouterr().err == "error: first line second line\n"
    assert run_main(raising(DataError("x" * 700)), []) == 2
    assert capsys.readouterr().err == "error: " + "x" * 600 + " ...\n"


def test_other_exceptions_exit_1_with_their_type_and_interrupts_130(capsys):
    assert run_main(raising(RuntimeError("boom")), []) == 1
    assert capsys.readouterr().err == "error: RuntimeError: boom (run with --debug for the traceback)\n"
    assert run_main(raising(KeyboardInterrupt()), []) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_system_exit_keeps_its_code():
    assert run_main(raising(SystemExit(0)), []) == 0
    assert run_main(raising(SystemExit(None)), []) == 0
    assert run_main(raising(SystemExit(5)), []) == 5
    assert run_main(raising(SystemExit("a message")), []) == 1


def test_debug_shows_the_traceback(capsys):
    assert run_main(raising(ConfigError("bad key")), ["--debug"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and err.endswith("\nerror: bad key\n")
    assert "seg.errors.ConfigError: bad key" in err
    assert run_main(raising(TrainingDiverged("nan")), ["--debug"]) == 3
    assert "Traceback" in capsys.readouterr().err
    assert run_main(raising(RuntimeError("boom")), ["--x", "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("RuntimeError: boom\n") and "--debug for" not in err


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="tool.py", description="A tool.\n\n  kept as written")
    p.add_argument("--workers", type=at_least(1), default=1)
    add_common_arguments(p)
    add_override_argument(p)
    return p


def test_argument_parser_errors_are_one_config_error():
    with pytest.raises(ConfigError) as err:
        parser().parse_args(["--nope"])
    assert str(err.value) == "tool.py: unrecognized arguments: --nope (see --help)"
    with pytest.raises(ConfigError) as err:
        parser().parse_args(["--workers", "0"])
    assert str(err.value) == "tool.py: argument --workers: must be at least 1, got 0 (see --help)"
    with pytest.raises(ConfigError) as err:
        parser().parse_args(["--workers", "two"])
    assert str(err.value) == "tool.py: argument --workers: expected an integer, got 'two' (see --help)"


def test_a_bad_flag_through_run_main_exits_2_with_one_line(capsys):
    assert run_main(lambda argv: parser().parse_args(argv) and 0, ["--workers", "-3"]) == 2
    assert capsys.readouterr().err == "error: tool.py: argument --workers: must be at least 1, got -3 (see --help)\n"


def test_help_keeps_the_description_as_written_and_exits_0(capsys):
    assert run_main(lambda argv: parser().parse_args(argv) and 0, ["--help"]) == 0
    out = capsys.readouterr().out
    assert "A tool.\n\n  kept as written" in out and "--debug" in out and "--set KEY=VALUE" in out


def test_common_and_override_arguments():
    args = parser().parse_args(["--workers", "3", "--set", "a.b=1", "--set", "c=[1, 2]"])
    assert args.workers == 3 and args.debug is False and args.overrides == ["a.b=1", "c=[1, 2]"]
    args = parser().parse_args(["--debug"])
    assert args.debug is True and args.overrides == [] and args.workers == 1


def test_at_least():
    parse = at_least(2)
    assert parse("2") == 2 and parse("17") == 17 and parse.__name__ == "integer >= 2"
    with pytest.raises(argparse.ArgumentTypeError, match="must be at least 2, got 1"):
        parse("1")
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer, got '2.5'"):
        parse("2.5")
    assert at_least(0)("0") == 0


def test_quiet_environment_sets_defaults_only(monkeypatch):
    monkeypatch.delenv("NO_ALBUMENTATIONS_UPDATE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's choice is kept
    quiet_environment()
    assert os.environ["NO_ALBUMENTATIONS_UPDATE"] == "1" and os.environ["HF_HUB_OFFLINE"] == "0"

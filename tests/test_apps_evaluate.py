"""Tests for seg/apps/evaluate.py: the command line (help, argument errors as one line and exit 2).
What an evaluation writes is tested in tests/test_run_evaluation.py."""

import pytest

from seg.apps import evaluate as evaluate_app
from seg.cli import run_main


def test_help_names_the_script_and_the_files_it_writes(capsys):
    with pytest.raises(SystemExit) as stop:
        evaluate_app.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: evaluate.py") and "eval-<split>.json" in out


@pytest.mark.parametrize(
    "argv, message",
    [([], "the following arguments are required: --run"), (["--run", "x", "--split", "train"], "--split")],
)
def test_argument_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert run_main(evaluate_app.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1

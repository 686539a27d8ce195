"""The command line is what it was before the configuration moved out of run.py (tests/golden/cli.json):
the same --help, flag table, validated arguments, run names and config hashes. Flags added since are left
out of the comparison (they are new, not changed)."""

import contextlib
import io
import json

import pytest

from tests.cli_golden import GOLDEN, snapshot

# Flags added after the golden record was taken.
ADDED = {"config", "print_config"}


@pytest.fixture(scope="module")
def recorded():
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def now():
    with contextlib.redirect_stdout(io.StringIO()):
        return snapshot(hide=ADDED)


def test_help_text_is_unchanged(recorded, now):
    if recorded["python"] != now["python"]:
        pytest.skip(f"argparse formats help differently on Python {now['python']} (recorded on {recorded['python']})")
    # The one intended change: --window_stats lists the models with a statistics branch in registry order.
    before, after = entry(recorded["help"], "--window_stats"), entry(now["help"], "--window_stats")
    swapped = " ".join(before.split()).replace("ResNet1D, DualGAFNet: a branch", "DualGAFNet, ResNet1D: a branch")
    assert " ".join(after.split()) == swapped.replace("on for ResNet1D, on for DualGAFNet", "on for DualGAFNet, on for ResNet1D")
    assert now["help"].replace(after, "") == recorded["help"].replace(before, "")  # everything else byte for byte


def entry(help_text: str, option: str) -> str:
    """The lines of one flag's entry in --help."""
    lines = help_text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {option} "))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("  -"))
    return "".join(lines[start:end])


def test_flag_table_is_unchanged(recorded, now):
    assert now["flags"] == recorded["flags"]


@pytest.mark.parametrize("label", json.loads(GOLDEN.read_text())["lines"])
def test_command_line_resolves_as_before(recorded, now, label):
    assert now["lines"][label] == recorded["lines"][label]

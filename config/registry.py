"""The flag registry: every flag is declared once, with its role and its part of the run name;
the lists other parts need (what a resumed run must match, what names a run, what a saved
configuration holds) are derived from these declarations (``config.flags.flag_table``)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass

from config.types import on_off

RECIPE = "recipe"  # shapes the data, the model, the loss or the schedule: a resumed run must match it
LAYOUT = "layout"  # how a window is cut into micro-batches: a resumed run must keep the effective batch
RUN = "run"  # how or where this run executes (device, outputs, progress): free to change on resume
TSL = "tsl"  # a Time-Series-Library name, translated into the flags above before anything else (config/tsl.py)


@dataclass(frozen=True)
class NamePart:
    """A flag's part of the run name: its place, its format, and whether it shows (default:
    when the flag is set, so options added later leave the default names unchanged)."""

    order: int
    fmt: str
    shows: Callable[[argparse.Namespace], bool] | None = None


NOT_DECLARED = object()


@dataclass(frozen=True)
class Flag:
    role: str
    name: NamePart | None
    older_runs: object = NOT_DECLARED  # recipe flags added later: the value every run had before the flag existed
    action: argparse.Action | None = None
    saved: bool = True  # part of a run's configuration (args.json, --print_config); False: what one invocation does
    per_model: object = NOT_DECLARED  # default None, resolved per model: a ModelSpec's own default, else this value
    group: str = ""  # its --help group

    def absent(self, value) -> bool:
        """Whether ``value`` is what a run gets without typing the flag at all (None, an unset switch)."""
        return value is None or (self.action.nargs == 0 and value != self.action.const)

    def text(self, value):
        """``value`` as a configuration file holds it: what the flag's type reads back (``on``/``off``,
        ``5min``, ``tab``), numbers, strings, switches and lists as they are."""
        spell = getattr(self.action.type, "text", None)
        return spell(value) if spell is not None and value is not None else value

    def spell(self, value) -> str:
        """``value`` as it is typed on the command line (for messages): ``--window_stats off``,
        ``--no_temporal``, ``no --max_gap``."""
        option = self.action.option_strings[0]
        if self.absent(value):
            return f"no {option}"
        if self.action.nargs == 0:  # a switch that is set
            return option
        if self.action.type is on_off:
            return f"{option} {'on' if value else 'off'}"
        return f"{option} {' '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a mistake in one line (no usage block) and exits with 2. A flag whose
    value came from a configuration file is named with the file and key (``sources``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.flags: dict[str, Flag] = {}
        self.sources: dict[str, str] = {}  # dest -> "FILE, key 'dest'" for values read from --config

    def error(self, message: str):
        named = re.match(r"argument --(\w+)", message)
        source = self.sources.get(named.group(1)) if named else None
        where = f" (from {source})" if source else ""
        self.exit(2, f"{self.prog}: error: {message}{where} (see --help)\n")

    def group(self, title: str, description: str | None = None) -> FlagGroup:
        return FlagGroup(self, self.add_argument_group(title, description), title)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the empty ones (None, off switches)."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


class FlagGroup:
    """One ``--help`` group; ``add`` is the only way flags are added."""

    def __init__(self, parser: OneLineParser, group, title: str):
        self.parser, self._group, self.title = parser, group, title

    def add(
        self,
        option: str,
        role: str,
        *,
        name=None,
        older_runs=NOT_DECLARED,
        saved=True,
        per_model=NOT_DECLARED,
        **kwargs,
    ) -> None:
        """``add_argument`` that also records the flag's role. ``older_runs``: a checkpoint written
        before this recipe flag existed was trained as with this value, so ``--resume`` continues it
        when the run has that value. ``saved=False``: the flag says what this invocation does
        (--resume, --print_config), not what the run is, and a saved configuration leaves it out.
        ``per_model``: the default for models whose ``ModelSpec.defaults`` name none (``default`` is None)."""
        action = self._group.add_argument(option, **kwargs)
        self.parser.flags[action.dest] = Flag(role, name, older_runs, action, saved, per_model, self.title)

    def recipe(self, option: str, **kwargs) -> None:
        self.add(option, RECIPE, **kwargs)

    def layout(self, option: str, **kwargs) -> None:
        self.add(option, LAYOUT, **kwargs)

    def run(self, option: str, **kwargs) -> None:
        self.add(option, RUN, **kwargs)

    def tsl(self, option: str, **kwargs) -> None:
        self.add(option, TSL, **kwargs)


def typed_flags(argv: list[str] | None) -> set[str]:
    """The flags typed on the command line (argparse fills in the others with defaults)."""
    return {token.split("=", 1)[0][2:] for token in argv or () if token.startswith("--")}

"""Configuration files: ``--config FILE`` sets flag values, ``--print_config`` writes them.

A file is TOML, YAML or JSON with flag names as top-level keys (``batch_size = 8``), or the
``args.json`` an earlier run wrote (its ``config``: every flag as the run resolved it). Each value
goes through its flag's own type and choices, so a file is refused exactly as the command line
would be, with the file and key named. Flags typed on the command line override the file.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path

from config import tsl
from config.flags import build_parser, flag_table
from config.registry import TSL, Flag, OneLineParser, typed_flags
from config.validation import validate

FORMATS = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}
DERIVED = "derived"  # the table of what the run worked out from the other flags (recorded, not read as flags)


def parse(argv: list[str]):
    """The command line (and the ``--config`` file it names) -> (parser, validated args, notes, the flags
    typed: on the command line or, with a value other than the default, in the file)."""
    parser = build_parser()
    path, typed = _config_path(argv), typed_flags(argv)
    file_argv, recorded = file_arguments(parser, path, typed) if path is not None else ([], {})
    full = [*file_argv, *argv]  # later values win: the command line overrides the file
    args = parser.parse_args(full)
    notes = validate(parser, args, full)
    if typed <= {"config"}:  # the file alone: what the run worked out must come out the same
        for dest, value in recorded.items():
            now = parser.flags[dest].text(getattr(args, dest))
            if now != value:
                notes.append(
                    f"this version works out --{dest} {now} where {path} recorded {value} (a default changed?); "
                    f"add {dest} = {json.dumps(value)} to the file to keep it"
                )
    return parser, args, notes, typed_flags(full)


def _config_path(argv: list[str]) -> str | None:
    """The last ``--config FILE`` (or ``--config=FILE``) of the command line, read before parsing it."""
    path = None
    for i, token in enumerate(argv):
        if token == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif token.startswith("--config="):
            path = token.split("=", 1)[1]
    return path


def file_arguments(parser: OneLineParser, path: str, typed: set[str]) -> tuple[list[str], dict]:
    """The file's values as command-line arguments, each checked by its flag alone, and the values it records
    as worked out by the run (its ``derived`` table). Values equal to a flag's default are left out, and so are
    flags typed on the command line (or their Time-Series-Library names): the run then reads as if the rest had
    been typed before the command line."""
    values, flags, arguments = read_values(parser, path), parser.flags, []
    recorded = values.pop(DERIVED, {})
    if not isinstance(recorded, dict):
        parser.error(f"argument --config: {path}: '{DERIVED}' must be a table of flag values")
    for key in [*values, *recorded]:
        if key not in flags:
            close = difflib.get_close_matches(key, flags, n=1)
            hint = f"; did you mean {close[0]}?" if close else " (keys are flag names without --, see --help)"
            parser.error(f"argument --config: {path}: unknown key '{key}'{hint}")
    if "config" in values:
        parser.error(f"argument --config: {path}: key 'config': a configuration file cannot name another one")
    partner = {**tsl.ALIASES, **{ours: name for name, ours in tsl.ALIASES.items()}}
    overridden = typed | {partner[key] for key in typed if key in partner}
    for key, value in values.items():
        if key in overridden:
            continue
        parser.sources[key] = f"{path}, key '{key}'"
        tokens = _tokens(parser, flags[key], key, value)
        alone = parser.parse_args(tokens)  # the flag's own type and choices; an error names the file and key
        if getattr(alone, key) != flags[key].action.default:
            arguments += tokens
        else:
            del parser.sources[key]
    return arguments, recorded


def _tokens(parser: OneLineParser, flag: Flag, key: str, value) -> list[str]:
    """``value`` of a file as the arguments that type it. A true or false stands for a switch, on|off, a choice
    named on or off (YAML reads a bare on/off as a boolean), or a flag that takes an optional value: the flag alone
    (true) or nothing (false)."""
    option, action = flag.action.option_strings[0], flag.action
    if value is None:
        return []
    if isinstance(value, list):
        if action.nargs not in ("*", "+"):
            parser.error(f"argument --{key}: expected one value, got a list")
        return [option, *map(_text, value)]
    if isinstance(value, dict):
        parser.error(f"argument --{key}: expected one value, got a table")
    if not isinstance(value, bool):
        if action.nargs == 0:
            parser.error(f"argument --{key}: a switch: expected true or false, got {value!r}")
        return [f"{option}={_text(value)}"]
    word = "on" if value else "off"
    if getattr(action.type, "text", None) is not None or word in (action.choices or ()):
        return [f"{option}={flag.text(value) if action.type else word}"]
    if action.nargs in (0, "?"):
        return [option] if value else []
    parser.error(f"argument --{key}: expected {action.metavar or 'a value'}, got {str(value).lower()}")


def _text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def read_values(parser: OneLineParser, path: str) -> dict:
    """The flag values a file holds (for a run's args.json: its configuration)."""
    kind = FORMATS.get(Path(path).suffix.lower())
    if kind is None:
        parser.error(f"argument --config: {path}: expected a .toml, .yaml, .yml or .json file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        parser.error(f"argument --config: cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
    try:
        values = _load(kind, text)
    except ImportError:
        parser.error(f"argument --config: reading {path} needs PyYAML (pip install pyyaml), or write it as TOML")
    except ValueError as exc:  # tomllib, json and yaml (re-raised as ValueError) syntax errors
        parser.error(f"argument --config: {path} is not valid {kind}: {' '.join(str(exc).split())}")
    if not isinstance(values, dict):
        parser.error(f"argument --config: {path} holds no table of flag values (keys are flag names, e.g. batch_size)")
    if kind == "JSON" and "run" in values and "args" in values:  # a run's args.json
        return run_configuration(values)
    return values


def _load(kind: str, text: str):
    if kind == "TOML":
        return tomllib.loads(text)
    if kind == "JSON":
        return json.loads(text)
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def run_configuration(record: dict) -> dict:
    """The configuration an args.json records. Runs before --config recorded only the args as the run
    resolved them; their --train_epochs was resolved from auto unless it was typed."""
    if "config" in record:
        return record["config"]
    flags = flag_table()
    values = {
        key: flags[key].text(value) if key in flags else value
        for key, value in record["args"].items()
        if key not in flags or (flags[key].saved and flags[key].role != TSL)
    }
    if "train_epochs" not in typed_flags(record.get("command", [])[1:]):
        values.pop("train_epochs", None)
    return values


def configuration(args, derived=()) -> dict:
    """Every saved flag of ``args`` as a file holds it (None values left out: they are the defaults' 'not set');
    the flags in ``derived`` (worked out by validation from other flags: the default model, its format and
    defaults, the stride, the run's name) in a table of their own, which reading back does not pin, so typing
    another --model or --step over the file works them out again. Time-Series-Library names are left out:
    their values are in the flags they name."""
    kept = [dest for dest, flag in flag_table().items() if flag.saved and flag.role != TSL]
    saved = {dest: flag_table()[dest].text(getattr(args, dest)) for dest in kept if getattr(args, dest) is not None}
    values = {dest: value for dest, value in saved.items() if dest not in derived}
    worked_out = {dest: value for dest, value in saved.items() if dest in derived}
    return {**values, DERIVED: worked_out} if worked_out else values


def to_toml(values: dict, notes: list[str] = ()) -> str:
    """``values`` (from ``configuration``) as a TOML file, one commented section per --help group."""
    lines = [
        "# python run.py --config FILE (flags typed after it override these values)",
        *(f"# note: {n}" for n in notes),
    ]
    group = None
    for dest, value in values.items():
        if dest == DERIVED:
            continue
        if flag_table()[dest].group != group:
            group = flag_table()[dest].group
            lines += ["", f"# {group}"]
        lines.append(f"{dest} = {_toml_value(value)}")
    if values.get(DERIVED):
        lines += ["", f"[{DERIVED}]  # worked out from the flags above: typing other flags works them out again"]
        lines += [f"{dest} = {_toml_value(value)}" for dest, value in values[DERIVED].items()]
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string

"""Value types of the flags: each parses the text typed after a flag, refuses what the flag cannot
take with one line (argparse prints it as ``argument --flag: ...``), and, where the parsed value
reads differently from what was typed, spells it back (``text``) for a configuration file."""

from __future__ import annotations

import argparse
import math
import re


def _number(kind, low=None, high=None, low_open=False, name="number"):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite {name}, got {text!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


def int_in(low: int, high: int):
    return _number(int, low, high, name="an integer")


def float_in(low: float, high: float, low_open: bool = False):
    return _number(float, low, high, low_open, name="a number")


def positive_int(high=10**7):
    return int_in(1, high)


def non_negative_int(high=10**7):
    return int_in(0, high)


def non_negative_float(high=None):
    return float_in(0.0, high)


def positive_float(high=None):
    return float_in(0.0, high, low_open=True)


def or_auto(number):
    """``number``, or the word auto (a value the run decides)."""

    def parse(text: str) -> int | str:
        return text if text == "auto" else number(text)

    return parse


epochs_or_auto = or_auto(positive_int(100_000))
batches_or_auto = or_auto(positive_int(10**6))
size_or_auto = or_auto(positive_int(1_000_000))


def on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


on_off.text = lambda value: "on" if value else "off"


def _spelled(choices: dict[str, str], what: str):
    """A type that takes a name or the character itself (comma or ',') and gives the character."""

    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return choices[text]

    names = {char: name for name, char in reversed(choices.items())}  # the first name of each character
    parse.text = lambda value: names.get(value, value)
    return parse


separator = _spelled(
    {"comma": ",", ",": ",", "semicolon": ";", ";": ";", "tab": "\t", "\\t": "\t", "\t": "\t"},
    "comma, semicolon or tab",
)
decimal_mark = _spelled({"point": ".", ".": ".", "comma": ",", ",": ","}, "point or comma")


def duration_seconds(text: str) -> float:
    """'5min', '90s', '1h', '00:05:00' -> seconds; a bare number is refused (minutes? rows?)."""
    import pandas as pd

    if re.fullmatch(r"\s*[-+]?[\d.]+\s*", text):
        raise argparse.ArgumentTypeError(f"give {text!r} a unit: a duration such as 5min, 90s or 1h")
    try:
        seconds = pd.Timedelta(text.strip()).total_seconds()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 5min, 90s or 1h, got {text!r}") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"must be a positive duration, got {text!r}")
    return seconds


duration_seconds.text = lambda seconds: f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds!r}s"


def device_name(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def gpu_index(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a GPU index 0, 1, ..., got {text!r}")
    return int(text)

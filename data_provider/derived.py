"""Derived signals: what HVAC fault-detection rules look at, computed from named sensor roles.

Our models see each sensor scaled on its own; rules in the style of APAR look at relations
between sensors: the mixed-air temperature lies between the outdoor and the return air
temperature, and where in between is set by the outdoor-air damper; the supply air follows
its set point; the heating and the cooling valve are not open together; the duct pressure
follows its set point. ``--derived_signals auto`` finds the sensors' roles from the column
names (the LBNL names and the simulator's) or from a ``--sensor_roles`` JSON file, and appends
one channel per relation whose sensors are all present; a file that lacks them trains without
those channels, with a one-line note.

A derived signal is a pointwise function of one row, so it is computed on the raw table in
float64 before scaling, and again, identically, in front of a trained model on new logs
(``Derivation`` is a torch module in ``exp/inference.py``'s ``Predictor``). Its recipe is
plain data (names, operations, column indices, unit scales) kept in the checkpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from utils.errors import UserError

# role -> regular expressions on the column name, lower case, runs of non-letters as one space.
ROLE_PATTERNS: dict[str, tuple[str, ...]] = {
    "outdoor_air_temp": (r"\boutdoor air temp", r"^oa temp$", r"^oat$"),
    "return_air_temp": (r"\breturn air temp", r"^ra temp$", r"^rat$"),
    "mixed_air_temp": (r"\bmixed air temp", r"^ma temp$", r"^mat$"),
    "supply_air_temp": (r"\bsupply air temp(erature)?$", r"^sa temp$", r"^sat$"),
    "supply_air_temp_setpoint": (r"\bsupply air temp(erature)? set ?point$", r"^sa tempspt$", r"^sat (sp|spt|setpoint)$"),
    "supply_air_temp_heating_setpoint": (r"\bsupply air temp(erature)? heating set ?point$",),
    "supply_air_temp_cooling_setpoint": (r"\bsupply air temp(erature)? cooling set ?point$",),
    "outdoor_air_damper": (r"\boutdoor air damper", r"^oa dmpr dm$"),
    "heating_valve": (r"\bheating coil valve", r"^hwc vlv dm$"),
    "cooling_valve": (r"\bcooling coil valve", r"^chwc vlv dm$"),
    "duct_pressure": (r"\bduct static pressure$", r"^sa sp$"),
    "duct_pressure_setpoint": (r"\bduct static pressure set ?point$", r"^sa spspt$"),
}
ROLES = tuple(ROLE_PATTERNS)
COMMAND_ROLES = ("outdoor_air_damper", "heating_valve", "cooling_valve")  # 0..1 or 0..100 %: put on 0..1
MIN_SPREAD = 1.0  # outdoor-air fraction from temperatures: undefined (0) when outdoor and return air differ less


def normalised(name: str) -> str:
    return re.sub(r"[^a-z]+", " ", name.lower()).strip()


def find_roles(channels: list[str], roles_file: str | None = None) -> dict[str, int]:
    """Role -> column index. From ``roles_file`` (JSON: role -> column name) when given, else
    from the column names; a role that two columns match is left out (ambiguous)."""
    if roles_file is not None:
        return _roles_from_file(channels, roles_file)
    found: dict[str, int] = {}
    for role, patterns in ROLE_PATTERNS.items():
        hits = [i for i, name in enumerate(channels) if any(re.search(p, normalised(name)) for p in patterns)]
        if len(hits) == 1:
            found[role] = hits[0]
    return found


def _roles_from_file(channels: list[str], path: str) -> dict[str, int]:
    try:
        given = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"--sensor_roles: cannot read {path} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"--sensor_roles: {path} is not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
        raise UserError(f'--sensor_roles: {path} must map roles to column names, e.g. {{"mixed_air_temp": "MAT"}}')
    unknown = sorted(set(given) - set(ROLES))
    if unknown:
        raise UserError(f"--sensor_roles: unknown role {unknown[0]!r} in {path}; roles: {', '.join(ROLES)}")
    stripped = [c.strip() for c in channels]
    absent = [column for column in given.values() if column.strip() not in stripped]
    if absent:
        raise UserError(f"--sensor_roles: column {absent[0]!r} of {path} is not a sensor column of the data")
    return {role: stripped.index(column.strip()) for role, column in given.items()}


# name -> (operation, roles it needs). Each is one number per row.
SIGNALS: dict[str, tuple[str, tuple[str, ...]]] = {
    "oa_fraction_from_temps": ("oa_fraction", ("outdoor_air_temp", "return_air_temp", "mixed_air_temp")),
    "oa_fraction_minus_damper": ("oa_fraction_minus", ("outdoor_air_temp", "return_air_temp", "mixed_air_temp", "outdoor_air_damper")),
    "mixed_air_outside_oa_ra": ("outside_range", ("mixed_air_temp", "outdoor_air_temp", "return_air_temp")),
    "supply_air_temp_error": ("difference", ("supply_air_temp", "supply_air_temp_setpoint")),
    "supply_air_above_heating_setpoint": ("difference", ("supply_air_temp", "supply_air_temp_heating_setpoint")),
    "supply_air_above_cooling_setpoint": ("difference", ("supply_air_temp", "supply_air_temp_cooling_setpoint")),
    "coil_temp_rise": ("difference", ("supply_air_temp", "mixed_air_temp")),
    "heating_and_cooling": ("minimum", ("heating_valve", "cooling_valve")),
    "duct_pressure_error": ("difference", ("duct_pressure", "duct_pressure_setpoint")),
}


def plan_signals(channels: list[str], values: np.ndarray, roles_file: str | None = None) -> tuple[list[dict], list[str]]:
    """The recipe of every signal the columns allow, and the names of those left out. Command
    signals (damper, valves) are put on 0..1: a column whose largest value is above 1.5 is in %."""
    roles = find_roles(channels, roles_file)
    recipe, missing = [], []
    for name, (op, needs) in SIGNALS.items():
        if not all(role in roles for role in needs):
            missing.append(name)
            continue
        columns = [roles[role] for role in needs]
        scales = [100.0 if role in COMMAND_ROLES and np.nanmax(values[:, roles[role]]) > 1.5 else 1.0 for role in needs]
        recipe.append({"name": name, "op": op, "columns": columns, "scales": scales})
    return recipe, missing


def _oa_fraction(oat: torch.Tensor, rat: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
    spread = oat - rat
    defined = spread.abs() >= MIN_SPREAD
    fraction = (mat - rat) / torch.where(defined, spread, torch.ones_like(spread))
    return torch.where(defined, fraction.clamp(-0.5, 1.5), torch.zeros_like(fraction))


def _outside_range(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How far ``x`` lies outside [min(a, b), max(a, b)] (0 inside), signed."""
    return x - torch.minimum(torch.maximum(x, torch.minimum(a, b)), torch.maximum(a, b))


OPERATIONS = {
    "oa_fraction": lambda x: _oa_fraction(x[0], x[1], x[2]),
    "oa_fraction_minus": lambda x: _oa_fraction(x[0], x[1], x[2]) - x[3],
    "outside_range": lambda x: _outside_range(x[0], x[1], x[2]),
    "difference": lambda x: x[0] - x[1],
    "minimum": lambda x: torch.minimum(x[0], x[1]),
}


class Derivation(nn.Module):
    """Raw rows [..., C] -> [..., C + len(recipe)]: the sensors, then the derived signals."""

    def __init__(self, recipe: list[dict]):
        super().__init__()
        self.recipe = [dict(step) for step in recipe]

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        if not self.recipe:
            return values
        out = [OPERATIONS[s["op"]]([values[..., c] / k for c, k in zip(s["columns"], s["scales"])]) for s in self.recipe]
        return torch.cat([values, torch.stack(out, dim=-1)], dim=-1)


def derived_names(recipe: list[dict]) -> list[str]:
    return [f"derived:{step['name']}" for step in recipe]

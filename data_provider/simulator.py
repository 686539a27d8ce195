"""Built-in, seeded simulator of a single-duct VAV air-handling unit (AHU) with faults.

It writes the same table a building-automation export gives: a ``Datetime`` column, one
column per sensor or control signal (names as in the LBNL fault data sets), and a ``label``
column. As in the LBNL experiments, every calendar day runs one scenario (fault-free or one
fault) and the days come in shuffled order, so each class sees cold and warm weather.

What is simulated, once per minute:
* weather: outdoor temperature with a daily cycle, multi-day fronts and short-term noise;
* an occupancy schedule (06:00-19:00) with set-point reset and night set-back;
* a zone whose temperature follows internal gains, the envelope and the supply air, with VAV
  boxes whose opening follows the zone temperature (and reheat when the zone is cold);
* controllers: one PI loop on supply-air temperature that sequences heating valve ->
  economizer OA damper -> cooling valve, and a PI loop on duct static pressure driving the
  supply-fan speed;
* physics: mixing box, coils with capacity that falls with air flow, fan heat, a lagged
  supply-air sensor, and Gaussian sensor noise.

Faults act on the plant, the controllers keep working, and the signature appears in how
signals relate to each other (the same as in real buildings). Two families are deliberately
similar: an OA damper stuck at 25 % or 75 %, and a heating valve leaking 10 % or 40 %.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SENSORS = [
    "OA_TEMP",  # outdoor air temperature, degC
    "RA_TEMP",  # return air temperature
    "MA_TEMP",  # mixed air temperature
    "SA_TEMP",  # supply air temperature
    "SA_TEMPSPT",  # supply air temperature set point
    "ZONE_TEMP",  # zone temperature
    "OA_DMPR_DM",  # outdoor-air damper command, %
    "RA_DMPR_DM",  # return-air damper command, %
    "HWC_VLV_DM",  # heating-coil valve command, %
    "CHWC_VLV_DM",  # cooling-coil valve command, %
    "SF_SPD_DM",  # supply-fan speed command, %
    "SA_SP",  # duct static pressure, Pa
    "SA_SPSPT",  # duct static pressure set point, Pa
]

FAULTS: dict[str, dict] = {
    "normal": {},
    "oa_damper_stuck_25": {"damper_stuck": 25.0},
    "oa_damper_stuck_75": {"damper_stuck": 75.0},
    "heating_valve_leak_10": {"heating_leak": 10.0},
    "heating_valve_leak_40": {"heating_leak": 40.0},
    "cooling_valve_stuck_50": {"cooling_stuck": 50.0},
    "sa_temp_sensor_bias_2": {"sat_bias": 2.0},
    "supply_fan_degraded_70": {"fan_efficiency": 0.7},
}

MINUTES_PER_DAY = 1440
LABEL_COLUMN = "label"
TIME_COLUMN = "Datetime"


def _clip(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


def _valve_effect(opening_pct: float) -> float:
    """Equal-percentage-like valve: small openings already pass a good part of the flow."""
    x = opening_pct / 100.0
    return x * (1.5 - 0.5 * x)


def _weather(days: int, rng: np.random.Generator) -> np.ndarray:
    """Outdoor temperature per minute: daily cycle + fronts drifting over days + noise."""
    daily_mean = np.empty(days)
    daily_mean[0] = rng.uniform(0, 24)
    for d in range(1, days):  # fronts: a mean-reverting random walk between about -8 and 30 degC
        daily_mean[d] = np.clip(daily_mean[d - 1] + 0.2 * (12 - daily_mean[d - 1]) + rng.normal(0, 6), -8, 30)
    amplitude = rng.uniform(3, 8, size=days)
    t = np.arange(days * MINUTES_PER_DAY) / MINUTES_PER_DAY  # in days
    centres = np.arange(days) + 0.5
    mean = np.interp(t, centres, daily_mean)  # smooth across midnight
    amp = np.interp(t, centres, amplitude)
    cycle = np.sin(2 * np.pi * (t % 1 - 9 / 24))  # coldest near 03:00, warmest near 15:00
    shocks = rng.normal(0, 0.04, size=t.size).tolist()
    noise = [0.0] * t.size
    for i in range(1, t.size):  # slow AR(1): clouds and gusts
        noise[i] = 0.995 * noise[i - 1] + shocks[i]
    return mean + amp * cycle + np.array(noise)


def simulate_ahu(days_per_class: int = 6, seed: int = 0, start: str = "2024-05-06") -> pd.DataFrame:
    """Simulate ``days_per_class`` days of every class, in shuffled day order."""
    rng = np.random.default_rng(seed)
    classes = list(FAULTS)
    day_labels = rng.permutation(np.repeat(np.arange(len(classes)), days_per_class))
    days = len(day_labels)
    oat = _weather(days, rng)
    n = days * MINUTES_PER_DAY
    # Python floats and lists in the loop below: numpy scalar arithmetic is several times slower
    # and gives the same IEEE results.
    oat = oat.tolist()
    noise = rng.normal(0, 1, size=(n, 6)).tolist()
    day_faults = [FAULTS[classes[label]] for label in day_labels]
    out = []

    # Plant and controller state.
    zone, sat_true, pressure = 22.5, 14.0, 150.0
    seq_integral, fan_integral = 150.0, 40.0
    for i in range(n):
        fault = day_faults[i // MINUTES_PER_DAY]
        shocks = noise[i]
        hour = (i % MINUTES_PER_DAY) / 60.0
        occupied = 6.0 <= hour < 19.0
        oa = oat[i]

        # Set points: supply-air reset on outdoor temperature, night set-back.
        if occupied:
            sat_spt = 12.8 + 3.0 * _clip((21.0 - oa) / 15.0, 0.0, 1.0)
            sp_spt, damper_min = 250.0, 20.0
        else:
            sat_spt, sp_spt, damper_min = 17.0, 125.0, 0.0

        # VAV boxes open with the zone temperature; reheat when the zone runs cold.
        demand = _clip(0.45 + 0.5 * (zone - 23.0), 0.15, 1.0) if occupied else 0.15
        reheat = _clip(0.02 * (21.0 - zone), 0.0, 0.06)

        # Fan speed: PI on duct static pressure.
        sp_error = (sp_spt - pressure) / sp_spt
        fan_integral = _clip(fan_integral + 2.0 * sp_error, 20.0, 100.0)
        fan_cmd = _clip(fan_integral + 12.0 * sp_error, 20.0, 100.0)
        speed = fault.get("fan_efficiency", 1.0) * fan_cmd / 100.0
        resistance = 0.3 + 0.7 * demand
        pressure += (500.0 * speed**2 / resistance - pressure) / 1.5
        flow = speed * math.sqrt(resistance)

        # Supply-air temperature: PI on a sequence 0..300 (heat | economize | cool).
        return_air = zone + 0.6
        sat_meas_prev = sat_true + fault.get("sat_bias", 0.0)
        error = sat_meas_prev - sat_spt  # > 0: too warm, move towards cooling
        economize = occupied and 2.0 < oa < return_air - 1.0
        new_integral = _clip(seq_integral + 0.8 * error, 0.0, 300.0)
        if not economize and 100.0 < new_integral < 200.0:  # no economizer stage: skip it
            new_integral = 200.0 if new_integral > seq_integral else 100.0
        seq_integral = new_integral
        seq = _clip(seq_integral + 8.0 * error, 0.0, 300.0)
        heat_cmd = _clip(100.0 - seq, 0.0, 100.0)
        cool_cmd = _clip(seq - 200.0, 0.0, 100.0)
        damper_cmd = damper_min + (100.0 - damper_min) * _clip((seq - 100.0) / 100.0, 0.0, 1.0) if economize else damper_min

        # Plant: damper, mixing box, coils (with faults), fan heat, sensor lag.
        damper = fault.get("damper_stuck", damper_cmd)
        oa_fraction = 0.03 + 0.92 * (damper / 100.0) ** 0.8
        mixed = oa_fraction * oa + (1 - oa_fraction) * return_air
        heat_pos = max(heat_cmd, fault.get("heating_leak", 0.0))
        cool_pos = fault.get("cooling_stuck", cool_cmd)
        air = 0.5 + flow
        heat_dt = 22.0 * _valve_effect(heat_pos) / air
        cool_dt = min(26.0 * _valve_effect(cool_pos) / air, max(mixed + heat_dt - 7.0, 0.0))
        sat_true += (mixed + 0.8 + heat_dt - cool_dt - sat_true) / 3.0
        sat_meas = sat_true + fault.get("sat_bias", 0.0)

        # Zone: internal and solar gains, envelope, supply air, reheat.
        gains = (0.02 if occupied else 0.004) + 0.01 * max(math.sin(math.pi * (hour - 7) / 12), 0.0)
        zone += gains + 0.0015 * (oa - zone) + 0.01 * flow * demand * (sat_true - zone) + reheat

        out.append((
            oa + 0.08 * shocks[0],
            return_air + 0.08 * shocks[1],
            mixed + 0.1 * shocks[2],
            sat_meas + 0.08 * shocks[3],
            sat_spt,
            zone + 0.05 * shocks[4],
            damper_cmd,
            100.0 - damper_cmd,
            heat_cmd,
            cool_cmd,
            fan_cmd,
            pressure + 3.0 * shocks[5],
            sp_spt,
        ))  # fmt: skip

    frame = pd.DataFrame(np.round(np.array(out), 3), columns=SENSORS)
    frame.insert(0, TIME_COLUMN, pd.date_range(start, periods=n, freq="min"))
    frame[LABEL_COLUMN] = np.asarray(classes)[np.repeat(day_labels, MINUTES_PER_DAY)]
    return frame

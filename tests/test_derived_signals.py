"""Derived signals from sensor roles (--derived_signals, --sensor_roles)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from data_provider import simulator
from data_provider.derived import Derivation, find_roles, plan_signals
from tests.conftest import TINY
from tests.test_cli import run_cli
from tests.test_trained_model import call, outputs, predict, run_folder

# The LBNL files' headers as they are written (trailing spaces included).
LBNL_SZ = ["AHU: Supply Air Temperature", "AHU: Supply Air Temperature Heating Set Point", "AHU: Supply Air Temperature Cooling Set Point",
           "AHU: Outdoor Air Temperature", "AHU: Mixed Air Temperature", "AHU: Return Air Temperature", "AHU: Supply Air Fan Status",
           "AHU: Supply Air Fan Speed Control Signal", "AHU: Outdoor Air Damper Control Signal  ", "AHU: Return Air Damper Control Signal",
           "AHU: Exhaust Air Damper Control Signal    ", "AHU: Cooling Coil Valve Control Signal", "AHU: Heating Coil Valve Control Signal",
           "Occupancy Mode Indicator"]  # fmt: skip
LBNL_MZ = ["AHU: Supply Air Temperature", "AHU: Supply Air Temperature Set Point", "AHU: Outdoor Air Temperature",
           "AHU: Mixed Air Temperature", "AHU: Return Air Temperature", "AHU: Outdoor Air Damper Control Signal  ",
           "AHU: Cooling Coil Valve Control Signal", "AHU: Heating Coil Valve Control Signal",
           "AHU: Supply Air Duct Static Pressure Set Point", "AHU: Supply Air Duct Static Pressure "]  # fmt: skip


def test_roles_are_found_from_the_lbnl_and_the_simulator_column_names():
    sz = find_roles(LBNL_SZ)
    assert {role: LBNL_SZ[i] for role, i in sz.items()} == {
        "outdoor_air_temp": "AHU: Outdoor Air Temperature", "return_air_temp": "AHU: Return Air Temperature",
        "mixed_air_temp": "AHU: Mixed Air Temperature", "supply_air_temp": "AHU: Supply Air Temperature",
        "supply_air_temp_heating_setpoint": "AHU: Supply Air Temperature Heating Set Point",
        "supply_air_temp_cooling_setpoint": "AHU: Supply Air Temperature Cooling Set Point",
        "outdoor_air_damper": "AHU: Outdoor Air Damper Control Signal  ", "heating_valve": "AHU: Heating Coil Valve Control Signal",
        "cooling_valve": "AHU: Cooling Coil Valve Control Signal"}  # fmt: skip
    mz = find_roles(LBNL_MZ)
    assert LBNL_MZ[mz["duct_pressure"]] == "AHU: Supply Air Duct Static Pressure "
    assert LBNL_MZ[mz["duct_pressure_setpoint"]] == "AHU: Supply Air Duct Static Pressure Set Point"
    assert LBNL_MZ[mz["supply_air_temp_setpoint"]] == "AHU: Supply Air Temperature Set Point"
    sim = find_roles(simulator.SENSORS)
    assert {role: simulator.SENSORS[i] for role, i in sim.items()} == {
        "outdoor_air_temp": "OA_TEMP", "return_air_temp": "RA_TEMP", "mixed_air_temp": "MA_TEMP", "supply_air_temp": "SA_TEMP",
        "supply_air_temp_setpoint": "SA_TEMPSPT", "outdoor_air_damper": "OA_DMPR_DM", "heating_valve": "HWC_VLV_DM",
        "cooling_valve": "CHWC_VLV_DM", "duct_pressure": "SA_SP", "duct_pressure_setpoint": "SA_SPSPT"}  # fmt: skip
    assert find_roles(["MA_TEMP", "mixed air temperature"]) == {}  # two columns claim the role: left out


def test_derived_signals_against_hand_computed_values():
    channels = ["OA_TEMP", "RA_TEMP", "MA_TEMP", "SA_TEMP", "SA_TEMPSPT", "OA_DMPR_DM", "HWC_VLV_DM", "CHWC_VLV_DM", "SA_SP", "SA_SPSPT"]
    rows = np.array([
        # OAT  RAT   MAT   SAT   SP    damper% heat% cool% DSP  DSPSP
        [10.0, 20.0, 17.0, 13.0, 12.0, 30.0, 0.0, 40.0, 250.0, 240.0],  # 30 % outdoor air by temperatures, as commanded
        [10.0, 20.0, 22.0, 18.0, 12.0, 50.0, 60.0, 20.0, 200.0, 240.0],  # MAT 2 above both: a bad sensor or a leak
        [20.5, 20.0, 20.2, 14.0, 12.0, 80.0, 0.0, 0.0, 240.0, 240.0],  # OAT ~ RAT: the fraction is undefined -> 0
    ])  # fmt: skip
    recipe, missing = plan_signals(channels, rows, None)
    assert missing == ["supply_air_above_heating_setpoint", "supply_air_above_cooling_setpoint"]
    out = Derivation(recipe)(torch.tensor(rows)).numpy()
    derived = dict(zip([s["name"] for s in recipe], out[:, len(channels) :].T))
    np.testing.assert_allclose(out[:, : len(channels)], rows)  # the sensors stay as they were
    np.testing.assert_allclose(derived["oa_fraction_from_temps"], [0.3, -0.2, 0.0])  # (MAT - RAT) / (OAT - RAT)
    np.testing.assert_allclose(derived["oa_fraction_minus_damper"], [0.0, -0.7, -0.8])  # damper in % -> 0..1
    np.testing.assert_allclose(derived["mixed_air_outside_oa_ra"], [0.0, 2.0, 0.0])
    np.testing.assert_allclose(derived["supply_air_temp_error"], [1.0, 6.0, 2.0])
    np.testing.assert_allclose(derived["coil_temp_rise"], [-4.0, -4.0, -6.2])
    np.testing.assert_allclose(derived["heating_and_cooling"], [0.0, 0.2, 0.0])
    np.testing.assert_allclose(derived["duct_pressure_error"], [10.0, -40.0, 0.0])


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs")
    assert call([*TINY, "--export_data", str(folder / "ahu.csv")]) == 0
    frame = pd.read_csv(folder / "ahu.csv")
    frame.drop(columns=["label"]).to_csv(folder / "unlabelled.csv", index=False)
    renamed = {"OA_TEMP": "t_out", "RA_TEMP": "t_ret", "MA_TEMP": "t_mix", "OA_DMPR_DM": "dmp"}
    frame.rename(columns=renamed).drop(columns=["SA_TEMP", "SA_TEMPSPT", "HWC_VLV_DM", "CHWC_VLV_DM", "SA_SP", "SA_SPSPT"]).to_csv(
        folder / "renamed.csv", index=False)  # fmt: skip
    (folder / "roles.json").write_text(json.dumps({"outdoor_air_temp": "t_out", "return_air_temp": "t_ret", "mixed_air_temp": "t_mix",
                                                   "outdoor_air_damper": "dmp"}))  # fmt: skip
    return folder


def test_a_log_without_the_columns_trains_without_them_with_a_one_line_note(logs, tmp_path, capsys):
    flags = [*TINY, "--model", "ResNet1D", "--train_epochs", "1", "--derived_signals", "auto", "--root_path", str(logs)]
    assert call([*flags, "--data_path", "renamed.csv", *outputs(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "note: --derived_signals auto: no sensor roles found among the columns" in out and "| 7 sensors," in out
    # The same log with its roles named: the four relations those columns allow.
    assert call([*flags, "--data_path", "renamed.csv", "--sensor_roles", str(logs / "roles.json"), *outputs(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "note: --derived_signals auto: 3 of 9 derived signals; left out for lack of columns: supply_air_temp_error" in out
    assert "| 10 sensors," in out


@pytest.mark.parametrize("roles, message", [
    ({"mixed_air": "t_mix"}, "--sensor_roles: unknown role 'mixed_air'"),
    ({"mixed_air_temp": "MAT"}, "--sensor_roles: column 'MAT' of"),
    (["t_mix"], "--sensor_roles: "),
])  # fmt: skip
def test_a_bad_roles_file_is_a_one_line_error(logs, tmp_path, roles, message):
    path = tmp_path / "roles.json"
    path.write_text(json.dumps(roles))
    result = run_cli(*TINY, "--root_path", str(logs), "--data_path", "renamed.csv", "--sensor_roles", str(path), *outputs(tmp_path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load
def test_predict_and_export_compute_the_derived_signals_from_the_raw_log(logs, tmp_path):
    assert call([*TINY, "--model", "ResNet1D", "--train_epochs", "1", "--dropout", "0", "--derived_signals", "auto",
                 "--export", "torchscript", *outputs(tmp_path)]) == 0  # fmt: skip
    ckpt = run_folder(tmp_path, "ckpt")
    deployment = torch.load(ckpt / "best.pt", weights_only=True)["deployment"]
    assert deployment["channels"] == list(simulator.SENSORS) and len(deployment["derived"]) == 7
    assert predict(tmp_path, ckpt / "best.pt", logs / "unlabelled.csv") == 0  # the log has the 13 sensors only
    (out,) = (tmp_path / "pred").rglob("predictions.csv")
    both = pd.read_csv(run_folder(tmp_path) / "predictions.csv").merge(pd.read_csv(out), on=["window_start", "window_end"])
    assert len(both) > 0 and (both["predicted_class_x"] == both["predicted_class_y"]).all()
    np.testing.assert_allclose(both["probability_x"], both["probability_y"], atol=1e-6)
    card = json.loads((ckpt / "model.json").read_text())
    assert len(card["channels"]) == 13 and "[batch, 32, 13]" in card["input"]
    windows = torch.as_tensor(pd.read_csv(logs / "unlabelled.csv").drop(columns=["Datetime"]).to_numpy(np.float32)[:64].reshape(2, 32, 13))
    from exp.inference import load_predictor

    predictor, _ = load_predictor(ckpt / "best.pt", torch.device("cpu"))
    with torch.no_grad():
        np.testing.assert_allclose(torch.jit.load(str(ckpt / "model.ts"))(windows).numpy(), predictor(windows).numpy(), atol=1e-5)


@pytest.mark.parametrize("model_name", ["ResNet1D", "DualGAFNet"])
@pytest.mark.parametrize("stats", [True, False])
def test_the_statistics_branch_feeds_the_classifier_and_can_be_left_out(model_name, stats):
    from data_provider.gaf import dual_gaf
    from models import InputDims, build_model
    from tests.conftest import make_args

    args = make_args("--model", model_name, "--window_stats", "on" if stats else "off")
    model = build_model(model_name, args, InputDims(channels=3, length=24, classes=4))
    branch = model.stats if model_name == "ResNet1D" else model.window_stats
    if not stats:
        assert branch is None
        return
    window = torch.randn(5, 24, 3, dtype=torch.float64)
    model.double()
    inputs = (*dual_gaf(window.clamp(-1, 1), 8), window) if model_name == "DualGAFNet" else (window,)
    model(*inputs).logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.parameters())
    # The branch sees mean, std, min, max and last minus first of every sensor, computed here with numpy.
    x = window.numpy()
    expected = np.stack([x.mean(1), x.std(1), x.min(1), x.max(1), x[:, -1] - x[:, 0]], axis=-1).reshape(5, 15)
    linear = branch[0]
    reference = torch.nn.functional.gelu(torch.from_numpy(expected) @ linear.weight.T + linear.bias)
    torch.testing.assert_close(branch(window), reference)

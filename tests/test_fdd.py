"""FDD rates by hand and against label counts; finding the fault-free class; the text report."""

import warnings

import numpy as np
import pytest

from utils.errors import UserError
from utils.fdd import fdd_rates, find_normal_class, format_report
from utils.metrics import classification_report


def labels_from_confusion(cm):
    """y_true / y_pred vectors that reproduce ``cm`` (rows true, columns predicted)."""
    cm = np.asarray(cm)
    pairs = [(i, j) for i in range(cm.shape[0]) for j in range(cm.shape[1]) for _ in range(cm[i, j])]
    y_true, y_pred = (np.array(v, dtype=np.int64) for v in zip(*pairs, strict=True)) if pairs else (np.zeros(0, int),) * 2
    return y_true, y_pred


def report_of(cm):
    y_true, y_pred = labels_from_confusion(cm)
    return classification_report(y_true, y_pred, len(cm))


# --- rates against confusion matrices counted by hand -----------------------------------------


def test_three_classes_by_hand():
    cm = [
        [17, 2, 1],  # normal: 20 windows, 2 + 1 = 3 false alarms
        [4, 10, 6],  # fault A: 4 missed, 10 right, 6 called fault B
        [1, 3, 16],  # fault B: 1 missed, 3 called fault A, 16 right
    ]
    r = fdd_rates(cm, 0)
    assert r["false_alarm_rate"] == pytest.approx(3 / 20)
    # faulty windows 20 + 20 = 40; missed 4 + 1 = 5; detected 40 - 5 = 35
    assert r["detection_rate"] == pytest.approx(35 / 40)
    # among the 35 detected, 10 + 16 = 26 got their own class
    assert r["diagnosis_accuracy"] == pytest.approx(26 / 35)
    counts = ("normal_windows", "false_alarms", "faulty_windows", "detected", "missed", "correctly_diagnosed")
    assert [r[c] for c in counts] == [20, 3, 40, 35, 5, 26]
    assert r["normal_class"] == 0 and r["windows"] == 60


def test_a_class_never_predicted_and_normal_not_first():
    cm = [
        # pred: A  N  B  C
        [5, 2, 3, 0],  # A
        [1, 8, 1, 0],  # N (normal, index 1): 1 + 1 = 2 false alarms of 10
        [0, 0, 7, 0],  # B
        [2, 1, 3, 0],  # C: never predicted as C; 1 missed
    ]
    r = fdd_rates(np.array(cm), 1)
    assert r["false_alarm_rate"] == pytest.approx(2 / 10)
    # faulty 10 + 7 + 6 = 23; missed 2 + 0 + 1 = 3; detected 20
    assert r["detection_rate"] == pytest.approx(20 / 23)
    # right class among detected: A 5 + B 7 + C 0 = 12 of 20
    assert r["diagnosis_accuracy"] == pytest.approx(12 / 20)
    assert (r["missed"], r["detected"], r["correctly_diagnosed"]) == (3, 20, 12)


def test_zero_normal_windows_gives_no_false_alarm_rate():
    cm = [
        [0, 0, 0],  # no normal windows in the test set
        [2, 5, 1],
        [0, 3, 4],
    ]
    r = fdd_rates(cm, 0)
    assert r["false_alarm_rate"] is None and r["normal_windows"] == 0 and r["false_alarms"] == 0
    # faulty 8 + 7 = 15; missed 2; detected 13; right 5 + 4 = 9
    assert r["detection_rate"] == pytest.approx(13 / 15)
    assert r["diagnosis_accuracy"] == pytest.approx(9 / 13)


def test_no_normal_class_gives_no_rates():
    r = fdd_rates([[3, 1], [2, 4]], None)
    assert r["normal_class"] is None and r["windows"] == 10
    for key in ("false_alarm_rate", "detection_rate", "diagnosis_accuracy", "normal_windows", "detected", "missed"):
        assert r[key] is None


def test_nothing_detected_and_only_normal_windows():
    r = fdd_rates([[5, 0], [3, 0]], 0)  # every window called normal
    assert r["false_alarm_rate"] == 0.0 and r["detection_rate"] == 0.0  # 0 of 3 faults detected
    assert r["diagnosis_accuracy"] is None  # nothing detected: diagnosis not measured
    r = fdd_rates([[6, 2], [0, 0]], 0)  # only normal windows
    assert r["false_alarm_rate"] == pytest.approx(2 / 8) and r["detection_rate"] is None and r["diagnosis_accuracy"] is None


def test_values_are_plain_python_for_json():
    import json

    r = fdd_rates(np.array([[7, 1], [2, 5]], dtype=np.int32), np.int64(0))
    assert json.loads(json.dumps(r)) == r
    assert all(type(v) in (int, float) for v in r.values())


@pytest.mark.parametrize(
    ("cm", "normal"),
    [
        ([[1, 2, 3]], 0),  # not square
        ([[1, -1], [0, 2]], 0),  # negative count
        ([[1, 0.5], [0, 2]], 0),  # fractional count
        ([[1, 0], [0, 2]], 2),  # normal index out of range
        ([[1, 0], [0, 2]], -1),
        ([[1, 0], [0, 2]], True),  # a flag passed by mistake
    ],
)
def test_bad_inputs_are_caller_bugs(cm, normal):
    with pytest.raises(ValueError):
        fdd_rates(cm, normal)


@pytest.mark.parametrize("seed", range(6))
def test_rates_agree_with_counts_over_label_vectors(seed):
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    k, normal = 5, int(rng.integers(0, 5))
    y_true = rng.integers(0, k, 400)
    # biased towards the right class, and one fault class never predicted
    y_pred = np.where(rng.random(400) < 0.6, y_true, rng.integers(0, k, 400))
    never = (normal + 1) % k
    y_pred[y_pred == never] = normal
    cm = skm.confusion_matrix(y_true, y_pred, labels=list(range(k)))
    r = fdd_rates(cm, normal)

    is_normal, said_normal = y_true == normal, y_pred == normal
    detected = ~is_normal & ~said_normal
    assert r["normal_windows"] == is_normal.sum() and r["faulty_windows"] == (~is_normal).sum()
    assert r["false_alarms"] == (is_normal & ~said_normal).sum() and r["missed"] == (~is_normal & said_normal).sum()
    assert r["false_alarm_rate"] == pytest.approx(np.mean(~said_normal[is_normal]))
    assert r["detection_rate"] == pytest.approx(np.mean(~said_normal[~is_normal]))
    assert r["diagnosis_accuracy"] == pytest.approx(np.mean(y_pred[detected] == y_true[detected]))


# --- finding the fault-free class ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "index"),
    [
        (["normal", "heating_valve_leak_40"], 0),
        (["OA damper stuck / 25%", "Normal"], 1),
        (["a", "Fault-Free"], 1),
        (["a", "b", "fault free"], 2),
        (["0", "1", "2"], 0),
        (["a", " NORMAL "], 1),
        (["a", "b"], None),
        (["abnormal", "normal_ish"], None),
        (["normal", "0"], None),  # two candidates: let the user choose with --normal_class
    ],
)
def test_the_fault_free_class_is_found_by_name(names, index):
    assert find_normal_class(names, None) == index


def test_requested_class_matches_exactly_then_ignoring_case():
    names = ["baseline", "heating_valve_leak_40", "OA damper stuck / 25%"]
    assert find_normal_class(names, "OA damper stuck / 25%") == 2
    assert find_normal_class(names, "BaseLine") == 0
    assert find_normal_class(["normal", "baseline"], "baseline") == 1  # the flag wins over the name rule
    assert find_normal_class(["Normal", "normal"], "normal") == 1  # exact match before case folding


def test_unknown_requested_class_is_a_user_error_naming_the_flag_and_classes():
    names = ["normal", "heating_valve_leak_40", "OA damper stuck / 25%"]
    with pytest.raises(UserError) as err:
        find_normal_class(names, "healthy")
    message = str(err.value)
    assert "\n" not in message and "--normal_class" in message and "'healthy'" in message
    assert all(repr(n) in message for n in names)


def test_requested_class_matching_several_ignoring_case_is_a_user_error():
    with pytest.raises(UserError, match="--normal_class 'NORMAL' matches several"):
        find_normal_class(["Normal", "normal"], "NORMAL")


# --- the text report ----------------------------------------------------------------------------

FOUR = ["normal", "heating_valve_leak_40", "OA damper stuck / 25%", "cooling coil fouling"]
FOUR_CM = [
    [79, 1, 0, 0],  # 1 of 80 normal windows flagged
    [2, 17, 1, 0],
    [1, 0, 19, 0],
    [3, 0, 0, 0],  # never predicted as itself
]


def test_report_shows_every_class_the_matrix_and_the_rates():
    out = format_report(report_of(FOUR_CM), FOUR, 0)
    assert all(name in out for name in FOUR)
    assert "False-alarm rate: 1.25% (1 of 80 normal windows flagged as a fault)" in out
    # faulty 20 + 20 + 3 = 43; missed 2 + 1 + 3 = 6; detected 37; right 17 + 19 = 36
    assert "Detection rate: 86.05% (37 of 43 faulty windows flagged as a fault, 6 missed as normal)" in out
    assert "Diagnosis accuracy among detected faults: 97.30% (36 of 37 detected faults given their own class)" in out
    lines = out.splitlines()
    assert [line for line in lines if "normal " in line and line.startswith("*")]  # normal marked in table and matrix
    assert any(line.split()[-4:] == ["79", "1", "0", "0"] for line in lines)  # a confusion-matrix row
    assert "macro average" in out and out.isascii() and "\x1b" not in out
    (row,) = [line for line in lines if "cooling coil fouling" in line and "-" in line.split()]
    assert row.split()[-4:] == ["-", "0.0000", "0.0000", "3"]  # never predicted: precision 0/0 shown as '-'


def test_report_without_a_normal_class_names_the_flag():
    out = format_report(report_of(FOUR_CM), ["a", "b", "c", "d"], None)
    assert "False-alarm rate" not in out and "Detection rate" not in out
    (line,) = [line for line in out.splitlines() if "--normal_class" in line]
    assert "fault-free class" in line and len(line) <= 120


LONG_NINE = [
    "normal",
    "heating_valve_leak_40",
    "OA damper stuck / 25%",
    "cooling_coil_valve_stuck_closed_100",
    "supply fan speed drop / 50%",
    "return air temperature sensor bias +2K",
    "mixed air damper stuck / 75% open",
    "heating coil fouling (air side) / severe",
    "exhaust fan failure / complete",
]


def test_nine_long_names_fit_in_120_columns_with_large_counts():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 9, 200_000)
    y_pred = np.where(rng.random(200_000) < 0.7, y_true, rng.integers(0, 9, 200_000))
    out = format_report(classification_report(y_true, y_pred, 9), LONG_NINE, 0)
    assert max(len(line) for line in out.splitlines()) <= 120
    assert all(name in out for name in LONG_NINE)
    assert out.isascii()


def test_names_too_long_for_120_columns_are_shortened():
    names = [f"fault {i}: " + "very long description " * 6 for i in range(4)]
    out = format_report(report_of(FOUR_CM), names, None)
    assert max(len(line) for line in out.splitlines()) <= 120 and "..." in out


def test_many_classes_split_the_matrix_into_column_blocks():
    rng = np.random.default_rng(1)
    k = 40
    y_true, y_pred = rng.integers(0, k, 5000), rng.integers(0, k, 5000)
    out = format_report(classification_report(y_true, y_pred, k), [f"class_{i}" for i in range(k)], 3)
    assert max(len(line) for line in out.splitlines()) <= 120 and "predicted classes 0.." in out


def test_zero_support_classes_and_an_empty_test_set_raise_no_warnings():
    cm = [
        [10, 0, 0, 0],
        [0, 0, 0, 0],  # class 1: no windows, never predicted
        [2, 0, 0, 0],  # class 2: never predicted
        [0, 0, 0, 0],  # class 3: no windows
    ]
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        out = format_report(report_of(cm), FOUR, 0)
        assert "False-alarm rate: 0.00% (0 of 10 normal windows flagged as a fault)" in out
        assert "Diagnosis accuracy among detected faults: n/a (no fault was detected)" in out
        empty = format_report(report_of(np.zeros((4, 4), dtype=int)), FOUR, 0)
    assert "False-alarm rate: n/a" in empty and "Detection rate: n/a" in empty
    assert all(name in empty for name in FOUR)


def test_class_names_must_match_the_matrix():
    with pytest.raises(ValueError):
        format_report(report_of(FOUR_CM), FOUR[:3], 0)

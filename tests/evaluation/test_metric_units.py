"""The metrics behind the behaviour and evaluation tables on small hand-computed arrays:
LDS, leave-one-out and removal correlations, their coverage counts and "–" cells, the
evaluation table's per-size summaries and the fidelity checks' agreement. Beside the
end-to-end tests (tests/test_baselines.py, tests/apps/test_fidelity.py); no Ray, no store.

Expected values are worked out by hand in the comments, or by an independent formula
(scipy.stats, or a numpy line written here), never by the function under test."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from mp_ray.apps.fidelity import SCALE, Fidelity, agreement
from mp_ray.config import LearnerConfig
from mp_ray.distill.validation import change_correlation, parameter_errors
from mp_ray.evaluation.compare import (
    Predicted,
    Removals,
    Truth,
    behaviour_table,
    format_behaviour_table,
    predict_held_out,
    score_method,
)
from mp_ray.learners import make_learner
from mp_ray.predictor.evaluation import (
    _summary,
    compare_models,
    evaluation_table,
    format_table,
    size_strata,
    within_size_correlations,
)
from mp_ray.scores import (
    Score,
    cell,
    columnwise_correlation,
    lds,
    output_changes,
    paired_correlation,
    removal_correlation,
    removal_masks,
    varies,
)
from mp_ray.store.rows import Rows

# A method linear in the mask: output t of the model of subset S is Σ_{i∈S} W[i, t]. Target
# 0 weighs the points 1, 2, 4; target 1 gives −1, 0, 1 (ties between subsets); target 2
# never moves (a constant prediction: its correlations are undefined).
W = np.array([[1.0, -1.0, 0.0], [2.0, 0.0, 0.0], [4.0, 1.0, 0.0]])
HELD_OUT = np.array(
    [[1, 0, 0], [1, 1, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=bool
)  # predicted target 0: [1, 3, 6, 7, 4]; target 1: [−1, −1, 1, 0, 1]; target 2: 0
RETRAINED = np.array(
    [[2.0, 5.0, 0.0], [1.0, 4.0, 1.0], [3.0, 3.0, 2.0], [5.0, 2.0, 3.0], [4.0, 1.0, 4.0]]
)
# Target 0: ranks [1, 2, 4, 5, 3] vs [2, 1, 3, 5, 4], Σd² = 4, ρ = 1 − 6·4/(5·24) = 0.8.
# Target 1: ranks [1.5, 1.5, 4.5, 3, 4.5] vs [5, 4, 3, 2, 1]; centred a = [−1.5, −1.5, 1.5,
# 0, 1.5], b = [2, 1, 0, −1, −2]: Σab = −7.5, Σa² = 9, Σb² = 10, ρ = −7.5/√90.
LDS_PER_TARGET = [0.8, -7.5 / math.sqrt(90), math.nan]


def output_method(outputs: Callable[[np.ndarray], np.ndarray]) -> SimpleNamespace:
    """An output method (``outputs(masks (B, n)) -> (B, T)``) from a function."""
    return SimpleNamespace(outputs=outputs)


linear_method = output_method(lambda masks: np.asarray(masks, float) @ W)
constant_method = output_method(lambda masks: np.zeros((len(masks), 3)))


# -- varies and columnwise_correlation ------------------------------------------------------


def test_varies_is_relative_to_the_size_of_the_values():
    values = np.array(
        [
            [1.0, 5.0, 1e6, 0.0, -2e3],
            [1.0, 5.0 + 1e-12, 1e6 + 1e-4, 1e-8, -2e3 + 1e-5],
            [1.0, 5.0, 1e6, 0.0, -2e3],
        ]
    )
    # ptp: 0, 1e-12, 1e-4, 1e-8, 1e-5 against 1e-9·max(1, |v|): 1e-9, 5e-9, 1e-3, 1e-9, 2e-6.
    assert varies(values).tolist() == [False, False, False, True, True]
    assert bool(varies(np.array([1.0, 2.0]))) and not bool(varies(np.array([3.0, 3.0, 3.0])))
    assert not bool(varies(np.array([1.0, np.nan, 2.0])))  # a diverged output is no ranking


def test_columnwise_correlation_by_hand_with_ties_and_constant_columns():
    predicted = np.array(
        [[1, 1, 1, 1, 7, 1], [2, 2, 2, 2, 7, 2], [3, 3, 2, 3, 7, 3], [4, 4, 4, 4, 7, 4]], float
    )
    actual = np.array(
        [[10, 4, 1, 5, 1, 1], [20, 3, 2, 5, 2, 4], [30, 2, 3, 5, 3, 9], [40, 1, 4, 5, 4, 16]],
        float,
    )
    # Column 2, ranks with a tie: [1, 2.5, 2.5, 4] vs [1, 2, 3, 4]; centred a = [−1.5, 0, 0,
    # 1.5], b = [−1.5, −0.5, 0.5, 1.5]: Σab = 4.5, Σa² = 4.5, Σb² = 5, ρ = √0.9.
    rho = columnwise_correlation(predicted, actual)
    np.testing.assert_allclose(rho[[0, 1, 2, 5]], [1.0, -1.0, math.sqrt(0.9), 1.0])
    assert np.isnan(rho[3]) and np.isnan(rho[4])  # the actual, then the predicted, constant
    assert rho[2] == pytest.approx(stats.spearmanr(predicted[:, 2], actual[:, 2]).statistic)
    # Pearson, column 2: a = [−1.25, −0.25, −0.25, 1.75], b as above: Σab = 4.5, Σa² = 4.75,
    # r = 4.5/√23.75; column 5 (x against x²): b = [−6.5, −3.5, 1.5, 8.5], r = 25/√645.
    r = columnwise_correlation(predicted, actual, rank=False)
    np.testing.assert_allclose(r[[0, 1, 2, 5]], [1.0, -1.0, 4.5 / math.sqrt(23.75), 25 / 645**0.5])
    assert np.isnan(r[3]) and np.isnan(r[4])
    assert r[5] == pytest.approx(stats.pearsonr(predicted[:, 5], actual[:, 5]).statistic)
    assert r[5] < rho[5]  # monotone but not linear: Spearman 1, Pearson below


def test_columnwise_correlation_ignores_jitter_and_refuses_mismatched_shapes():
    actual = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 3.0]])
    jitter = 1 + 1e-15 * np.array([[1.0, -1.0], [-1.0, 1.0], [0.0, 0.5]])  # one θ in batches
    assert np.isnan(columnwise_correlation(jitter, actual)).all()
    with pytest.raises(ValueError, match=r"must both be \(K, T\).*\(3, 2\) and \(3, 1\)"):
        columnwise_correlation(actual, actual[:, :1])
    with pytest.raises(ValueError, match=r"\(K, T\)"):
        columnwise_correlation(actual[:, 0], actual[:, 0])  # vectors are not broadcast


# -- Score and cell ----------------------------------------------------------------------------


def test_a_score_is_the_mean_over_the_defined_targets_and_counts_them():
    score = Score.of(np.array([0.5, np.nan, -0.1, 1.0]))
    assert score.mean == pytest.approx(1.4 / 3) and score.defined == 3
    assert np.isnan(score.per_target[1])  # kept per target, not dropped
    nowhere = Score.of(np.array([np.nan, np.nan]))
    assert np.isnan(nowhere.mean) and nowhere.defined == 0
    empty = Score.of(np.zeros(0))
    assert np.isnan(empty.mean) and empty.defined == 0


def test_cell_prints_undefined_values_as_a_dash():
    assert cell(float("nan"), 6) == "     –"
    assert cell(None, 4) == "   –"
    assert cell(float("inf"), 3) == "  –"
    assert cell(0.12345, 8) == "   0.123"
    assert cell(-1.0, 8, ".4f") == " -1.0000"
    assert cell(np.float64(0.0), 5) == "0.000"  # a defined 0 is not undefined


# -- LDS -------------------------------------------------------------------------------------


def test_lds_by_hand_leaves_out_the_constant_target():
    score = lds(linear_method, HELD_OUT, RETRAINED)
    np.testing.assert_allclose(score.per_target, LDS_PER_TARGET)
    assert score.mean == pytest.approx((0.8 - 7.5 / math.sqrt(90)) / 2) and score.defined == 2
    for t in (0, 1):  # an independent Spearman per target
        expected = stats.spearmanr(linear_method.outputs(HELD_OUT)[:, t], RETRAINED[:, t]).statistic
        assert score.per_target[t] == pytest.approx(expected)
    # A target whose retrained outputs do not vary is undefined too, whatever was predicted.
    flat = RETRAINED.copy()
    flat[:, 0] = 3.0
    score = lds(linear_method, HELD_OUT, flat)
    assert score.defined == 1 and score.mean == pytest.approx(-7.5 / math.sqrt(90))
    exact = output_method(lambda masks: RETRAINED)
    assert lds(exact, HELD_OUT, RETRAINED).mean == pytest.approx(1.0)


def test_lds_refuses_mismatched_rows_too_few_subsets_and_wrong_outputs():
    with pytest.raises(ValueError, match="4 masks but 5 rows"):
        lds(linear_method, HELD_OUT[:4], RETRAINED)
    with pytest.raises(ValueError, match="at least 3"):
        lds(linear_method, HELD_OUT[:2], RETRAINED[:2])
    with pytest.raises(ValueError, match=r"\(5, 2\) and \(5, 3\)"):
        lds(output_method(lambda masks: linear_method.outputs(masks)[:, :2]), HELD_OUT, RETRAINED)


# -- removals --------------------------------------------------------------------------------


def test_removal_masks_remove_exactly_the_given_points():
    masks = removal_masks(4, [np.array([0]), np.array([1, 3]), np.array([], dtype=int), [2]])
    expected = [[0, 1, 1, 1], [1, 0, 1, 0], [1, 1, 1, 1], [1, 1, 0, 1]]
    np.testing.assert_array_equal(masks, np.array(expected, dtype=bool))
    assert masks.dtype == bool
    with pytest.raises(ValueError, match="removal 1 has indices outside 0…3"):
        removal_masks(4, [np.array([0]), np.array([4])])
    with pytest.raises(ValueError, match="outside"):  # not wrapped around to point 3
        removal_masks(4, [np.array([-1])])


def test_output_changes_are_taken_from_the_full_data_model():
    seen = []

    def outputs(masks):
        seen.append(np.array(masks))
        return linear_method.outputs(masks)

    changes = output_changes(output_method(outputs), removal_masks(3, [[0], [1, 2], []]))
    # Removing points changes the linear outputs by minus the sum of their rows of W.
    np.testing.assert_allclose(changes, [[-1, 1, 0], [-6, -1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(seen[0], np.ones((1, 3), dtype=bool))  # θ(D) once


def test_removal_correlation_gives_minus_one_to_an_anti_correlated_target():
    predicted = np.array([[1, 0.1, 0], [2, 0.4, 0], [3, 0.2, 0], [4, 0.3, 0]])
    actual = np.array([[-1, 1, 5], [-2, 4, 6], [-3, 2, 7], [-4, 3, 8]], float)
    score = removal_correlation(predicted, actual)
    np.testing.assert_allclose(score.per_target[:2], [-1.0, 1.0])
    assert np.isnan(score.per_target[2])  # a method that predicts no change
    assert score.mean == pytest.approx(0.0) and score.defined == 2
    with pytest.raises(ValueError, match="at least 3 removals"):
        removal_correlation(predicted[:2], actual[:2])


def test_paired_correlation_by_hand():
    predicted, actual = np.array([1.0, 2.0, 2.0, 4.0]), np.array([1.0, 2.0, 3.0, 4.0])
    pearson, spearman = paired_correlation(predicted, actual)
    assert pearson == pytest.approx(4.5 / math.sqrt(23.75))  # as in the columnwise test
    assert spearman == pytest.approx(math.sqrt(0.9))
    assert pearson == pytest.approx(stats.pearsonr(predicted, actual).statistic)
    assert all(np.isnan(paired_correlation(np.full(4, 2.0), actual)))
    for bad in ((predicted, actual[:3]), (predicted[:2], actual[:2]), (predicted[None], actual)):
        with pytest.raises(ValueError, match="same length ≥ 3"):
            paired_correlation(*bad)


# -- the behaviour table ---------------------------------------------------------------------


def _truth() -> Truth:
    # Leave-one-out: the linear method predicts −W[i] for point i: target 0 [−1, −2, −4]
    # against [−0.5, −1, −3] (ρ = 1); target 1 ranks [3, 2, 1] against [2, 3, 1]
    # (Σd² = 2, ρ = 1 − 12/24 = 0.5); target 2 constant. LOO = 0.75 over 2 targets.
    loo = Removals(
        removal_masks(3, [[0], [1], [2]]),
        np.array([[-0.5, 0.2, 0.1], [-1.0, 0.3, 0.2], [-3.0, -0.4, 0.3]]),
    )
    # Counterfactual: removals {0, 1}, {1, 2}, {0, 2}, {0} paired with targets 0, 1, 0, 1;
    # predicted changes of those targets −3, −1, −5, 1. The other entries of the retrained
    # changes would change both correlations if they were read instead.
    changes = np.array([[-2.0, 99, 99], [99, 0.5, 99], [-4.0, 99, 99], [99, 0.1, 99]])
    cf = Removals(removal_masks(3, [[0, 1], [1, 2], [0, 2], [0]]), changes, np.array([0, 1, 0, 1]))
    return Truth(RETRAINED, loo, cf)


def test_score_method_by_hand():
    row = score_method(linear_method, Predicted(linear_method.outputs(HELD_OUT), 2.0), _truth())
    assert row["targets"] == 3
    assert row["lds"] == pytest.approx(np.nanmean(LDS_PER_TARGET)) and row["lds_defined"] == 2
    assert row["loo"] == pytest.approx(0.75) and row["loo_defined"] == 2
    predicted, actual = [-3.0, -1.0, -5.0, 1.0], [-2.0, 0.5, -4.0, 0.1]
    assert row["cf_pearson"] == pytest.approx(stats.pearsonr(predicted, actual).statistic)
    # Ranks [2, 3, 1, 4] against [2, 4, 1, 3]: Σd² = 2, ρ = 1 − 12/60 = 0.8.
    assert row["cf_spearman"] == pytest.approx(0.8)
    assert row["seconds"] >= 2.0  # the held-out outputs' seconds, and the removals'
    without = score_method(
        linear_method, Predicted(linear_method.outputs(HELD_OUT)), Truth(RETRAINED)
    )
    assert set(without) == {"targets", "lds", "lds_defined", "seconds"}
    with pytest.raises(ValueError, match="at least 3 held-out subsets"):
        score_method(linear_method, Predicted(RETRAINED[:2]), Truth(RETRAINED[:2]))


def test_behaviour_table_counts_the_defined_targets_of_each_method():
    methods = {"linear": linear_method, "constant": constant_method}
    parts = [
        (HELD_OUT[:2], RETRAINED[:2]),
        (HELD_OUT[2:2], RETRAINED[2:2]),
        (HELD_OUT[2:], RETRAINED[2:]),
    ]
    actual, predicted = predict_held_out(methods, parts)  # an empty part is skipped
    np.testing.assert_array_equal(actual, RETRAINED)
    np.testing.assert_array_equal(predicted["linear"].outputs, linear_method.outputs(HELD_OUT))
    table = behaviour_table(methods, predicted, _truth())
    assert [row["method"] for row in table] == ["linear", "constant"]
    constant = table[1]
    assert constant["lds_defined"] == constant["loo_defined"] == 0
    assert all(np.isnan(constant[key]) for key in ("lds", "loo", "cf_pearson", "cf_spearman"))
    lines = format_behaviour_table(table).splitlines()
    assert " ".join(lines[0].split()) == "method LDS LOO ρ removal r removal ρ seconds"
    assert lines[1].split()[1:5] == ["0.005", "0.750", f"{table[0]['cf_pearson']:.3f}", "0.800"]
    assert lines[2].split()[1:5] == ["–"] * 4
    assert lines[3:] == [
        "LDS: mean over the targets with a defined correlation, of 3: linear 2, constant 0",
        "LOO ρ: mean over the targets with a defined correlation, of 3: linear 2, constant 0",
    ]


def test_format_behaviour_table_coverage_lines_and_unmeasured_cells():
    table = [
        {"method": "a", "targets": 2, "lds": 0.5, "lds_defined": 2},
        {"method": "b" * 30, "targets": 2, "lds": 0.25, "lds_defined": 2},
    ]
    lines = format_behaviour_table(table).splitlines()
    width = 32  # the longest name plus 2, over the 24 of short names
    assert lines[1] == f"{'a':<{width}}{'0.500':>12}" + f"{'–':>12}" * 4
    assert lines[2].startswith("b" * 30 + "  ")
    assert lines[3:] == [
        "LDS: mean over the targets with a defined correlation: all 2 for every method"
    ]
    table[0]["lds_defined"] = 1
    assert format_behaviour_table(table).splitlines()[-1] == (
        "LDS: mean over the targets with a defined correlation, of 2: a 1; all for the others"
    )


# -- the evaluation table (parameters against retraining, by subset size) --------------------


def test_size_strata_order_kept_rows_by_size():
    sizes = np.array([5, 1, 3, 2, 4, 6, 3])
    keep = np.array([1, 1, 1, 1, 0, 1, 1], dtype=bool)
    # Kept rows by size (ties in row order): 1, 3, 2, 6, 0, 5; 6 // 2 = 3 runs.
    strata = size_strata(sizes, keep, per_stratum=2)
    assert [s.tolist() for s in strata] == [[1, 3], [2, 6], [0, 5]]
    every = size_strata(sizes, np.ones(7, dtype=bool), per_stratum=2)  # 7 // 2 = 3 runs
    assert [s.tolist() for s in every] == [[1, 3, 2], [6, 4], [0, 5]]
    assert [s.tolist() for s in size_strata(sizes, keep, per_stratum=20)] == [[1, 3, 2, 6, 0, 5]]
    assert [s.tolist() for s in size_strata(sizes, np.zeros(7, dtype=bool))] == [[]]


def test_within_size_correlations_weigh_the_defined_strata_by_their_rows():
    values = {
        "loss_predicted": np.array([1, 2, 3, 1, 2, 3, 4, 1, 2, 3], float),
        "loss_actual": np.array([2, 4, 6, 4, 3, 2, 0, 5, 5, 5], float),
    }
    a, b, short, flat = [0, 1, 2], [3, 4, 5, 6], [7, 8], [7, 8, 9]
    # a: ρ = r = 1 (3 rows); b: ρ = −1, r: centred [−1.5, −0.5, 0.5, 1.5] and [1.75, 0.75,
    # −0.25, −2.25], Σab = −6.5, Σa² = 5, Σb² = 8.75 (4 rows); short: 2 rows; flat: the
    # actual loss is constant. Means weighted 3 : 4 over a and b alone.
    found = within_size_correlations(values, [np.array(s) for s in (a, b, short, flat)])
    r_b = -6.5 / math.sqrt(5 * 8.75)
    assert r_b == pytest.approx(
        np.corrcoef(values["loss_predicted"][b], values["loss_actual"][b])[0, 1]
    )
    assert found["loss_spearman"] == pytest.approx((3 - 4) / 7)
    assert found["loss_pearson"] == pytest.approx((3 + 4 * r_b) / 7)
    assert found["loss_strata"] == 2 and found["strata"] == 4
    none = within_size_correlations(values, [np.array(short), np.array(flat)])
    assert np.isnan(none["loss_spearman"]) and np.isnan(none["loss_pearson"])
    assert none["loss_strata"] == 0 and none["strata"] == 2


def test_summary_of_a_size_group_by_hand():
    values = {
        "rel_error": np.array([1.0, 2.0, 3.0, 4.0]),
        "square_error": np.array([1.0, 4.0, 9.0, 16.0]),
        "actual_low": np.array([-1.0, -5.0, 0.0, -2.0]),
        "actual_high": np.array([2.0, 10.0, 3.0, 1.0]),
        "agreement": np.array([1.0, 0.0, 0.5, 0.25]),
        "accuracy_gap": np.array([0.0, -1.0, 0.1, -0.1]),
    }
    keep = np.array([True, False, True, True])
    row = _summary(values, keep)
    assert row["rows"] == 3
    assert row["rel_error"] == pytest.approx(8 / 3)
    # RMSE √((1 + 9 + 16)/3) over the range of the kept actual θ: 3 − (−2) = 5.
    assert row["nrmse"] == pytest.approx(math.sqrt(26 / 3) / 5)
    assert row["agreement"] == pytest.approx(1.75 / 3)
    assert row["accuracy_gap"] == pytest.approx(0.0, abs=1e-12)
    assert _summary(values, np.zeros(4, dtype=bool)) == {"rows": 0}
    values["actual_low"] = values["actual_high"] = np.ones(4)
    assert "nrmse" not in _summary(values, keep)  # no range: undefined, not infinite


@pytest.fixture(scope="module")
def tiny():
    """Binary logistic regression on one feature: θ = (w, b), logit w·x + b."""
    config = LearnerConfig(kind="logistic", dtype="float64")
    learner = make_learner(config, np.array([[-2.0], [-1.0], [1.0], [2.0]]), [0, 0, 1, 1], 2)
    data = SimpleNamespace(X_test=np.array([[-1.0], [1.0], [2.0]]), y_test=np.array([0, 1, 1]))
    return learner, data


def test_compare_models_by_hand(tiny):
    learner, data = tiny
    actual = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    predicted = torch.tensor([[-1.0, 0.0], [1.0, -1.5]], dtype=torch.float64)
    values = compare_models(learner, predicted, actual, data)
    # Actual logits x: labels [0, 1, 1], all right. Predicted −x: [1, 0, 0], all wrong;
    # x − 1.5 = [−2.5, −0.5, 0.5]: [0, 0, 1], two of three agree and are right.
    np.testing.assert_allclose(values["rel_error"], [2.0, 1.5])
    np.testing.assert_allclose(values["square_error"], [2.0, 1.125])
    np.testing.assert_allclose(values["actual_low"], [0.0, 0.0])
    np.testing.assert_allclose(values["actual_high"], [1.0, 1.0])
    np.testing.assert_allclose(values["agreement"], [0.0, 2 / 3])
    np.testing.assert_allclose(values["accuracy_gap"], [-1.0, -1 / 3])
    x, y = data.X_test[:, 0], data.y_test

    def loss(w, b):  # mean cross-entropy: log(1 + e^z) − y·z
        z = w * x + b
        return np.mean(np.logaddexp(0, z) - y * z)

    np.testing.assert_allclose(values["loss_predicted"], [loss(-1, 0), loss(1, -1.5)])
    np.testing.assert_allclose(values["loss_actual"], [loss(1, 0), loss(1, 0)])


def test_evaluation_table_groups_rows_by_subset_size(tiny):
    learner, data = tiny
    masks = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=bool)
    params = np.array([[1.0, 0.0], [2.0, 0.5], [3.0, -0.5], [4.0, 0.0]])
    rows = Rows(np.arange(4), masks, params)

    class Exact:
        def predict(self, masks):
            return torch.as_tensor(params)

    table = evaluation_table(learner, {"exact": Exact()}, rows, data)
    # Sizes 1/4, 2/4, 3/4, 4/4 of n; groups are (low, high]: 0.5 is in 30%–50%, and none
    # of the rows falls in 50%–70%.
    assert [(row["subset size"], row["rows"]) for row in table] == [
        ("all", 4),
        ("10%–30%", 1),
        ("30%–50%", 1),
        ("70%–100%", 2),
    ]
    assert all(row["rel_error"] == 0 and row["agreement"] == 1 for row in table)
    assert table[0]["loss_spearman"] == pytest.approx(1.0) and table[0]["loss_strata"] == 1
    assert np.isnan(table[1]["loss_spearman"]) and table[1]["loss_strata"] == 0  # one row
    lines = format_table(table).splitlines()
    assert lines[2].split()[-2:] == ["–", "–"]
    assert lines[-1].endswith("exact 10%–30% 0 of 1, exact 30%–50% 0 of 1, exact 70%–100% 0 of 1")


# -- the fidelity checks' agreement ----------------------------------------------------------


def test_agreement_by_hand():
    predicted = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]])
    exact = np.array([[2.0, 1.0, 4.0, 3.0], [-1.0, 1.0, -2.0, 2.0]])
    scores = agreement(predicted, exact)
    # Row 0: ranks [1, 2, 3, 4] against [2, 1, 4, 3], Σd² = 4, ρ = 1 − 24/60 = 0.6; row 1
    # predicts one change for every point: undefined, left out.
    assert scores["spearman"] == pytest.approx(0.6) and scores["defined"] == 1
    pooled = stats.pearsonr(predicted.ravel(), exact.ravel()).statistic
    assert scores["Pearson"] == pytest.approx(pooled)
    assert scores["sign agreement"] == pytest.approx(6 / 8)  # both −1 and −2 have the wrong sign
    # Σ p·e = 2 + 2 + 12 + 12 + 0.5·(−1 + 1 − 2 + 2) = 28; Σ e² = 30 + 10 = 40.
    assert scores[SCALE] == pytest.approx(0.7)
    # With a floor of 1.5 the exact changes ±1 are left out: 4 of 5 signs agree.
    assert agreement(predicted, exact, floor=1.5)["sign agreement"] == pytest.approx(0.8)


def test_agreement_is_undefined_without_exact_changes_or_enough_pairs():
    still = agreement(np.array([[1.0, -1.0, 2.0]]), np.zeros((1, 3)))
    assert np.isnan(still["spearman"]) and still["defined"] == 0
    assert np.isnan(still["sign agreement"]) and np.isnan(still[SCALE])
    assert np.isnan(still["Pearson"])  # the exact side is constant
    two = agreement(np.array([[1.0, 2.0]]), np.array([[3.0, 5.0]]))
    assert np.isnan(two["Pearson"]) and two["spearman"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(K, T\)"):
        agreement(np.ones((2, 3)), np.ones((3, 2)))


def test_an_undefined_fidelity_never_passes():
    check = Fidelity("c", "Spearman", float("nan"), 0.5, 3, 4, details={"x": float("nan")})
    assert not check.passed
    text = check.line()
    assert "[WARNING]" in text and "undefined" in text and "also: x –" in text
    data = check.to_json()
    assert data["value"] is None and data["details"] == {"x": None} and data["passed"] is False
    assert Fidelity("c", "s", 0.5, 0.5, 3, 4).passed  # the threshold itself passes
    assert not Fidelity("c", "s", 0.4999, 0.5, 3, 4).passed


# -- the distillation's change correlation and parameter errors ------------------------------


def test_change_correlation_and_parameter_errors_by_hand():
    predicted = np.array([[1.0, 0.0], [2.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
    actual = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    pearson = change_correlation(predicted, actual)  # Pearson by default
    assert pearson.per_target[0] == pytest.approx(4.5 / math.sqrt(23.75))
    assert np.isnan(pearson.per_target[1]) and pearson.defined == 1
    assert change_correlation(predicted, actual, rank=True).mean == pytest.approx(math.sqrt(0.9))
    with pytest.raises(ValueError, match="constant for every target"):
        change_correlation(predicted, np.ones((4, 2)))
    with pytest.raises(ValueError, match="at least 3 removals, got 2"):
        change_correlation(predicted[:2], actual[:2])
    # Errors ‖θ̂ − θ‖ = [1, 2] over ‖θ‖ = [√2, 2]; Σ error² = 5 over Σ ‖θ − θ*‖² = 1 + 1.
    rel, change = parameter_errors(
        torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64),
        torch.tensor([[1.0, 1.0], [0.0, 2.0]], dtype=torch.float64),
        torch.tensor([0.0, 1.0], dtype=torch.float64),
    )
    assert rel == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert change == pytest.approx(math.sqrt(2.5))

"""The learned utility (DeepSets on U(S)) on a real store: 60 breast_cancer points, 600
Bernoulli(½) subsets retrained without Ray, rows split by the splits section (15% validation,
25% held out). Thresholds measured on this fixture: held-out Spearman with retraining 0.75
to 0.78 over seeds 0–4 (subset size alone: 0.23), best validation MSE 0.64 to 0.73."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from in_process_store import train_in_process
from scipy import stats

from mp_ray.apps import RetrainedModels, Utility
from mp_ray.apps.valuation import LearnedUtility, MaxSamples, RelativeTruncation, tmc_shapley
from mp_ray.config import ExperimentConfig, parse_experiment
from mp_ray.data import Dataset, load_dataset
from mp_ray.learners import Learner, make_learner
from mp_ray.store import ExperimentStore, StoreIncompleteError, StoreMismatchError
from mp_ray.store.rows import TEST, TRAIN, VAL, read_split

torch.set_num_threads(1)


@dataclasses.dataclass
class Setting:
    config: ExperimentConfig
    dataset: Dataset
    learner: Learner
    store: ExperimentStore

    @property
    def fractions(self) -> dict[str, float]:
        splits = self.config.splits
        return {"val_fraction": splits.val_fraction, "test_fraction": splits.test_fraction}

    def retrained(self, metric: str) -> Utility:
        data = self.dataset
        return Utility(RetrainedModels(self.learner), data.X_val, data.y_val, metric)


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> Setting:
    config = parse_experiment(
        {
            "seed": 0,
            "dataset": {
                "source": "sklearn",
                "name": "breast_cancer",
                "max_train": 60,
                "flip_fraction": 0.1,
            },
            "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-6},
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {
                "uri": str(tmp_path_factory.mktemp("utility") / "bc.zarr"),
                "n_rows": 600,
                "block_rows": 100,
            },
            "splits": {"val_fraction": 0.15, "test_fraction": 0.25},
        }
    )
    dataset = load_dataset(config.dataset)
    store = train_in_process(config, dataset)
    learner = make_learner(config.learner, dataset.X_train, dataset.y_train, dataset.n_classes)
    return Setting(config, dataset, learner, store)


@pytest.fixture(scope="module")
def learned(setting) -> LearnedUtility:
    utility = LearnedUtility("neg_loss", steps=600, eval_every=50, seed=0)
    return utility.fit(setting.store, setting.dataset, **setting.fractions)


def held_out_masks(setting: Setting) -> np.ndarray:
    blocks = list(range(setting.store.n_blocks))
    rows = read_split(setting.store, blocks, TEST, **setting.fractions)
    assert len(rows) > 120
    return rows.masks


def test_learned_utility_ranks_held_out_subsets_like_retraining(setting, learned):
    masks = held_out_masks(setting)
    predicted = learned(masks)
    assert predicted.shape == (len(masks),) and predicted.dtype == np.float64
    assert learned.evaluations == len(masks)
    actual = setting.retrained("neg_loss")(masks)
    rho = stats.spearmanr(predicted, actual).statistic
    assert rho > 0.6
    # It learned which points the subsets hold, not only how many.
    assert rho > stats.spearmanr(masks.sum(axis=1), actual).statistic + 0.3
    # Early stopping kept a network better than the training mean on validation rows.
    report = learned.report
    assert report.best_val_mse < 0.9 and 0 < report.best_step <= report.steps <= 600


def test_fit_uses_the_predictors_rows_and_reads_one_block_at_a_time(setting, monkeypatch):
    store, blocks = setting.store, list(range(setting.store.n_blocks))
    spans = []
    read = store.read

    def recorded(name, rows=None):
        spans.append(rows)
        return read(name, rows)

    monkeypatch.setattr(store, "read", recorded)
    utility = LearnedUtility(steps=20, eval_every=10).fit(
        store, setting.dataset, **setting.fractions
    )
    assert all(isinstance(s, slice) and s.stop - s.start <= 100 for s in spans)
    monkeypatch.undo()
    report = utility.report
    assert report.train_rows == len(read_split(store, blocks, TRAIN, **setting.fractions))
    assert report.val_rows == len(read_split(store, blocks, VAL, **setting.fractions))


@pytest.mark.parametrize("metric", ["neg_loss", "accuracy"])
def test_empty_and_degenerate_subsets_get_the_fallback_utility(setting, learned, metric):
    utility = learned
    if metric == "accuracy":
        utility = LearnedUtility("accuracy", steps=100, eval_every=50)
        utility.fit(setting.store, setting.dataset, **setting.fractions)
    n, y = setting.dataset.n_train, setting.dataset.y_train
    one_class = np.zeros((1, n), dtype=bool)
    one_class[0, y == 0] = True
    retrained = setting.retrained(metric)
    expected = retrained(np.zeros((2, n), dtype=bool))
    np.testing.assert_array_equal(utility(np.vstack([np.zeros((1, n), bool), one_class])), expected)
    if metric == "neg_loss":
        assert expected[0] == pytest.approx(-math.log(2))  # θ = 0: the uniform predictor
    else:  # the store's accuracy column, not its loss: near retraining's on average
        masks = held_out_masks(setting)
        assert abs(utility(masks).mean() - retrained(masks).mean()) < 0.03


def test_tmc_shapley_takes_the_learned_utility(setting, learned):
    before = learned.evaluations
    result = tmc_shapley(
        learned, MaxSamples(20), seed=0, truncation=RelativeTruncation(0.01, 0.4), round_size=10
    )
    n = setting.dataset.n_train
    assert result.values.shape == (n,) and np.isfinite(result.values).all()
    assert result.n_evaluations == learned.evaluations - before
    assert result.params["metric"] == "neg_loss"
    # Efficiency up to truncation: each permutation's marginals add up to U(cut) − U(∅),
    # with U(cut) within 1% of |U(D)| of U(D).
    ends = learned(np.stack([np.zeros(n, bool), np.ones(n, bool)]))
    full = ends[1]
    assert abs(result.values.sum() - (full - ends[0])) <= 0.01 * abs(full) + 1e-9


def test_bad_metric_store_and_calls_are_refused(setting, learned, tmp_path):
    with pytest.raises(ValueError, match="unknown utility metric 'f1'"):
        LearnedUtility("f1")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="not fitted"):
        LearnedUtility()(np.ones((1, 60), dtype=bool))
    with pytest.raises(ValueError, match=r"masks must have shape \(B, 60\)"):
        learned(np.ones((2, 59), dtype=bool))

    names = tuple(name for name in setting.store.spec.metric_names if name != "val_loss")
    spec = dataclasses.replace(setting.store.spec, metric_names=names)
    lossless = ExperimentStore.create_or_open(str(tmp_path / "no-loss.zarr"), spec)
    with pytest.raises(ValueError, match="no 'val_loss' metric column") as error:
        LearnedUtility("neg_loss").fit(lossless, setting.dataset, **setting.fractions)
    assert "val_accuracy" in str(error.value)  # the columns it has are listed
    unfinished = ExperimentStore.create_or_open(str(tmp_path / "empty.zarr"), setting.store.spec)
    with pytest.raises(StoreIncompleteError, match="6 unfinished blocks"):
        LearnedUtility().fit(unfinished, setting.dataset, **setting.fractions)

    other = load_dataset(setting.config.dataset.model_copy(update={"max_train": 50}))
    with pytest.raises(StoreMismatchError, match="another dataset"):
        LearnedUtility().fit(setting.store, other, **setting.fractions)

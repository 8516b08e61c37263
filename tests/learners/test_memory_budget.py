"""Rows in chunks under a memory budget: the chunk size, and passes taken in small chunks
(forced on a CPU by an explicit budget, the path a GPU learner takes) against one pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mp_ray.config import LearnerConfig
from mp_ray.learners import make_learner, with_points
from mp_ray.learners.memory import chunk_slices, device_budget, rows_per_chunk

# Bytes that leave 5–30 rows per chunk for six models: many chunks on every data set.
SMALL_BUDGET = 10_000


def test_rows_per_chunk_fits_the_budget():
    # 2,000 models × 10 classes of float32 logits: 80,000 bytes a row, so 1 GiB takes 13,421.
    assert rows_per_chunk(2**30, 2000, 10, 4) == 2**30 // 80_000
    assert rows_per_chunk(2**30, 2000, 10, 8) == 2**30 // 160_000
    # An intermediate holding three floats per model needs a third of the rows.
    assert rows_per_chunk(3 * 2**20, 4, 3, 8) == 2**20 // 32
    # Never below one row, and no models count as one.
    assert rows_per_chunk(10, 1000, 10, 8) == 1
    assert rows_per_chunk(800, 0, 10, 8) == 10


def test_chunk_slices_cover_the_rows_once():
    rows = np.arange(103)
    chunks = chunk_slices(103, 10)
    assert len(chunks) == 11
    np.testing.assert_array_equal(np.concatenate([rows[s] for s in chunks]), rows)
    assert chunk_slices(5, 10) == [slice(0, 10)]


def test_a_cpu_has_no_budget_even_when_one_is_configured():
    assert device_budget(torch.device("cpu")) is None
    assert device_budget(torch.device("cpu"), share=0.25, override_mb=64.0) is None


def chunked_and_whole(dataset, kind: str, name: str, **fields: object):
    """The same learner without a budget (one pass on these small sets) and with a budget
    small enough for many chunks."""
    data = dataset(name)
    config = LearnerConfig(kind=kind, **fields)
    args = (config, data.X_train, data.y_train, data.n_classes)
    whole = make_learner(*args)
    chunked = make_learner(*args, memory_budget=SMALL_BUDGET)
    assert whole.memory_budget is None and chunked.memory_budget == SMALL_BUDGET
    return data, whole, chunked


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_logistic_passes_in_chunks_equal_one_pass(dataset, subsets, name):
    data, whole, chunked = chunked_and_whole(dataset, "logistic", name, C=0.5)
    masks = torch.as_tensor(subsets(data))
    assert len(chunked.row_chunks(len(masks), chunked._pass_floats(1))) > 3
    params = whole.fit_batch(masks)
    for method in ("objective", "mean_subset_loss"):
        expected = getattr(whole, method)(params, masks)
        torch.testing.assert_close(getattr(chunked, method)(params, masks), expected)
    torch.testing.assert_close(
        chunked.objective_and_grad(params, masks), whole.objective_and_grad(params, masks)
    )
    few = masks[:2]  # exact Hessians: (K, d, d)
    torch.testing.assert_close(chunked.hessian(params[:2], few), whole.hessian(params[:2], few))
    # The fits run every pass in chunks; they agree to the solver's tolerance and beyond.
    torch.testing.assert_close(chunked.fit_batch(masks), params, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["breast_cancer", "digits"])
def test_svm_solves_in_groups_under_a_budget_equal_one_pass(dataset, subsets, name):
    """Under the budget the solver holds a few problems at a time (one, here) and gathers
    their violators a bucket of one problem at a time; a row's result is its own."""
    data, whole, chunked = chunked_and_whole(dataset, "svm", name, C=0.5)
    masks = torch.as_tensor(subsets(data))[:4]
    torch.testing.assert_close(chunked.fit_batch(masks), whole.fit_batch(masks))


def test_ridge_passes_in_chunks_equal_one_pass(dataset, subsets):
    data, whole, chunked = chunked_and_whole(dataset, "ridge", "digits", alpha=2.0)
    masks = torch.as_tensor(subsets(data))
    assert len(chunked.budget_chunks(len(masks), 3 * chunked.n_outputs)) > 10
    params = whole.fit_batch(masks)
    for method in ("objective", "objective_grad", "mean_subset_loss"):
        expected = getattr(whole, method)(params, masks)
        torch.testing.assert_close(getattr(chunked, method)(params, masks), expected)


def test_mlp_objective_and_its_gradient_in_chunks_equal_one_pass(dataset, subsets):
    data, whole, chunked = chunked_and_whole(dataset, "mlp", "wine", hidden=8, epochs=2)
    masks = torch.as_tensor(subsets(data))
    assert len(chunked.budget_chunks(len(masks), chunked.loss_floats())) > 10
    params = whole.fit_batch(masks, seeds=np.arange(len(masks)))
    for method in ("objective", "objective_grad"):
        expected = getattr(whole, method)(params, masks)
        torch.testing.assert_close(getattr(chunked, method)(params, masks), expected)


def test_a_learner_with_new_points_keeps_its_budget(dataset):
    _, _, chunked = chunked_and_whole(dataset, "logistic", "wine")
    extended = with_points(chunked, chunked.X[:3], chunked.y[:3])
    assert extended.memory_budget == SMALL_BUDGET

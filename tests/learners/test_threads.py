"""A batch trained in groups on CPU threads: the same models as one pass, and the caller's
torch settings left as they were."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from mp_ray.config import LearnerConfig
from mp_ray.learners import make_learner
from mp_ray.learners.threads import model_groups, run_single_threaded


@pytest.fixture
def two_threads() -> Iterator[None]:
    """torch with 2 intra-op threads in this thread (CI's machine has 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def fresh_thread_count() -> int:
    """The intra-op thread count a thread that has not used torch yet starts with."""
    counts: list[int] = []
    thread = threading.Thread(target=lambda: counts.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return counts[0]


def test_groups_are_even_ranges_one_per_thread(two_threads):
    cpu = torch.device("cpu")
    assert model_groups(250, cpu, 42) == [slice(0, 125), slice(125, 250)]
    assert model_groups(83, cpu, 42) == [slice(0, 83)]  # two groups would be too small
    assert model_groups(250, cpu, None) == [slice(0, 250)]
    assert model_groups(250, torch.device("cuda"), 42) == [slice(0, 250)]
    torch.set_num_threads(3)
    assert model_groups(10, cpu, 3) == [slice(0, 3), slice(3, 7), slice(7, 10)]


def test_grouped_digits_fit_equals_one_pass(dataset, two_threads):
    """Digits' rows are split in two groups at K = 128; with one intra-op thread the same
    batch is one pass. Degenerate rows (empty, one class missing) keep θ = 0 in both."""
    data = dataset("digits")
    config = LearnerConfig(kind="logistic", tol=1e-10, dtype="float64")
    learner = make_learner(config, data.X_train, data.y_train, data.n_classes)
    masks = np.random.default_rng(5).random((128, data.n_train)) < 0.5
    masks[3] = False
    masks[100] &= data.y_train != 7
    assert len(model_groups(len(masks), learner.device, learner._min_group())) == 2
    grouped = learner.fit_batch(masks)
    assert torch.get_num_threads() == 2 and fresh_thread_count() == 2

    torch.set_num_threads(1)
    assert len(model_groups(len(masks), learner.device, learner._min_group())) == 1
    one_pass = learner.fit_batch(masks)
    torch.testing.assert_close(grouped, one_pass, rtol=1e-8, atol=1e-10)
    assert grouped[[3, 100]].abs().max() == 0
    assert grouped.abs().sum(dim=1).gt(0).sum() == 126


def test_a_batch_of_only_degenerate_rows_splits_into_zeros(dataset, two_threads):
    data = dataset("digits")
    config = LearnerConfig(kind="logistic", dtype="float32")
    learner = make_learner(config, data.X_train, data.y_train, data.n_classes)
    masks = np.zeros((128, data.n_train), dtype=bool)
    masks[64:, data.y_train == 0] = True  # one class only
    assert len(model_groups(len(masks), learner.device, learner._min_group())) == 2
    params = learner.fit_batch(masks)
    assert params.shape == (128, learner.n_params) and params.abs().max() == 0


def test_tasks_run_single_threaded_in_the_callers_grad_mode(two_threads):
    with torch.no_grad():
        seen = run_single_threaded([lambda: (torch.get_num_threads(), torch.is_grad_enabled())] * 2)
    assert seen == [(1, False), (1, False)]
    assert torch.get_num_threads() == 2 and fresh_thread_count() == 2


def test_a_failing_task_raises_after_every_task_ended(two_threads):
    finished = threading.Event()

    def slow() -> None:
        finished.wait(0.2)
        finished.set()

    with pytest.raises(ZeroDivisionError):
        run_single_threaded([lambda: 1 / 0, slow])
    assert finished.is_set()
    assert torch.get_num_threads() == 2 and fresh_thread_count() == 2

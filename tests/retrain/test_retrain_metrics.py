"""A retraining run's metrics on the local Ray's Prometheus endpoint, scraped while it runs
and after: rows written, blocks written, models/s and rows pending, tagged with the
experiment and the store."""

from __future__ import annotations

import threading

import pytest
from prometheus import Sample, metrics_port, samples, wait_for

from mp_ray.config import parse_experiment
from mp_ray.retrain import run_retrain

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def of_store(found: list[Sample], store: str) -> list[float]:
    return [value for labels, value in found if labels.get("store") == store]


def test_the_endpoint_shows_models_per_second_and_rows_written(ray_session, tmp_path):
    uri = str(tmp_path / "scraped.zarr")
    config = parse_experiment(
        {
            "seed": 3,
            "dataset": {"source": "sklearn", "name": "wine"},
            "learner": {"kind": "logistic", "C": 1.0},
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {"uri": uri, "n_rows": 200, "block_rows": 10},
            "retrain": {"num_actors": 2, "num_cpus": 1, "max_in_flight": 1},
            "observability": {"experiment": "scraped-run"},
        }
    )
    port = metrics_port()
    written = "ray_mp_ray_retrain_rows_written_total"
    during: list[float] = []
    done = threading.Event()

    def scrape_while_running() -> None:
        while not done.is_set():
            during.extend(of_store(samples(port, written), uri))
            done.wait(0.5)

    scraper = threading.Thread(target=scrape_while_running, daemon=True)
    scraper.start()
    try:
        report = run_retrain(config)
    finally:
        done.set()
        scraper.join()
    assert report.store_uri == uri and report.rows_trained == 200

    rows = wait_for(port, written, lambda found: of_store(found, uri) == [200.0])
    (labels,) = [labels for labels, _ in rows if labels.get("store") == uri]
    assert labels["experiment"] == "scraped-run"
    assert all(0 < value <= 200 for value in during)  # partial counts, when seen mid-run
    rate = of_store(
        wait_for(port, "ray_mp_ray_retrain_models_per_second", lambda f: bool(of_store(f, uri))),
        uri,
    )
    # rows over the seconds from the pool's start to the last block: the report's figure,
    # whose clock also counts the store checks around the pool
    assert 0.5 * report.models_per_second < rate[0] < 2 * report.models_per_second
    blocks = wait_for(
        port, "ray_mp_ray_retrain_blocks_written_total", lambda f: bool(of_store(f, uri))
    )
    assert of_store(blocks, uri) == [20.0]
    pending = wait_for(port, "ray_mp_ray_retrain_rows_pending", lambda f: of_store(f, uri) == [0.0])
    assert of_store(pending, uri) == [0.0]

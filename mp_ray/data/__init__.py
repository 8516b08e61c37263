"""Datasets: scikit-learn's bundled sets, synthetic problems and files, split and scaled."""

from mp_ray.data.dataset import Dataset, fingerprint_arrays
from mp_ray.data.prepare import load_dataset
from mp_ray.data.sources import DatasetError

__all__ = ["Dataset", "DatasetError", "fingerprint_arrays", "load_dataset"]

"""Datasets: scikit-learn's bundled sets, synthetic problems and files, split and scaled.

:func:`load_dataset` turns a :class:`~mp_ray.config.DatasetConfig` into a :class:`Dataset`
in four steps, one module each: ``sources`` / ``files`` read raw (X, y); ``validation``
checks and encodes them; ``splits`` draws the stratified train / validation / test rows;
``scaling`` fits on the training split and scales every split. :func:`read_points` reads
new points from a file and prepares them the same way.
"""

from mp_ray.data.dataset import Dataset, fingerprint_arrays
from mp_ray.data.prepare import load_dataset, read_points
from mp_ray.data.raw import DatasetError

__all__ = ["Dataset", "DatasetError", "fingerprint_arrays", "load_dataset", "read_points"]

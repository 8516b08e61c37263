"""The declaration a store is created from, and the check that a reopen matches it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mp_ray.errors import MpRayError

FORMAT_VERSION = 1


class StoreMismatchError(MpRayError, ValueError):
    """An existing store was declared differently, or built from another dataset."""


@dataclass(frozen=True)
class StoreSpec:
    """Everything that fixes the content of a retraining store.

    ``n_rows`` models (N) over a ground set of ``n_train`` points (n), each with ``n_params``
    parameters (d), ``n_targets`` model outputs (T, on the test split) and one value per
    name in ``metric_names`` (k). Rows are grouped in blocks of ``block_rows``, each block a
    Zarr chunk written by one worker. ``learner`` and ``sampler`` are the validated config
    dumps; together with ``root_seed`` and the dataset fingerprint they make every row
    reproducible.
    """

    n_rows: int
    n_train: int
    n_params: int
    n_targets: int
    metric_names: tuple[str, ...]
    block_rows: int
    dataset_fingerprint: str
    dataset_name: str
    root_seed: int
    learner: dict[str, Any] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=dict)
    output_kind: str = "margin"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        for name in ("n_rows", "n_train", "n_params", "n_targets", "block_rows"):
            if getattr(self, name) <= 0:
                raise ValueError(f"StoreSpec.{name} must be positive, got {getattr(self, name)}")
        object.__setattr__(self, "metric_names", tuple(self.metric_names))

    @property
    def n_blocks(self) -> int:
        return -(-self.n_rows // self.block_rows)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["metric_names"] = list(self.metric_names)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoreSpec:
        return cls(**data)

    def check_compatible(self, existing: StoreSpec, uri: str) -> None:
        """Raise :class:`StoreMismatchError` naming every field where ``existing`` differs."""
        if existing.dataset_fingerprint != self.dataset_fingerprint:
            raise StoreMismatchError(
                f"store {uri} was built from another dataset: its fingerprint is "
                f"{existing.dataset_fingerprint[:16]}… ({existing.dataset_name}), this dataset's "
                f"is {self.dataset_fingerprint[:16]}… ({self.dataset_name})"
            )
        mine, theirs = self.to_json(), existing.to_json()
        diffs = [
            f"{key}: store has {theirs.get(key)!r}, config asks for {mine[key]!r}"
            for key in mine
            if mine[key] != theirs.get(key)
        ]
        if diffs:
            raise StoreMismatchError(
                f"store {uri} was declared with another spec; use a new store URI or the "
                "original config:\n  " + "\n  ".join(diffs)
            )

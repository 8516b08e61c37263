"""The declaration a store is created from, and the check that a reopen matches it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mp_ray.store.identity import Identity, StoreMismatchError, differences, make_identity

SPEC_ATTR = "mp_ray"  # the store group's attribute that holds its spec
FORMAT_VERSION = 1
# Fields of the spec that its identity covers (or that only name things for messages).
_IDENTITY_FIELDS = ("dataset_fingerprint", "dataset_name", "root_seed", "learner", "sampler")


@dataclass(frozen=True)
class StoreSpec:
    """Everything that fixes the content of a retraining store.

    ``n_rows`` models (N) over a ground set of ``n_train`` points (n), each with ``n_params``
    parameters (d), ``n_targets`` model outputs (T, on the test split) and one value per
    name in ``metric_names`` (k). Rows are grouped in blocks of ``block_rows``, each block a
    Zarr chunk written by one worker. ``learner`` and ``sampler`` are the validated config
    dumps; together with ``root_seed`` and the dataset fingerprint they make every row
    reproducible: the store's :attr:`identity` (:mod:`mp_ray.store.identity`).
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

    @property
    def identity(self) -> Identity:
        """The experiment identity the rows were made with (dataset, learner, sampler, seed)."""
        return make_identity(self.dataset_fingerprint, self.learner, self.sampler, self.root_seed)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["metric_names"] = list(self.metric_names)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoreSpec:
        return cls(**data)

    def _record(self) -> dict[str, Any]:
        """The identity and the layout fields (n_rows, block_rows, …), flat."""
        layout = {k: v for k, v in self.to_json().items() if k not in _IDENTITY_FIELDS}
        return {**self.identity, **layout}

    def check_compatible(self, existing: StoreSpec, uri: str) -> None:
        """Raise :class:`StoreMismatchError` naming every field where ``existing`` differs
        (in its identity or its layout), with both values."""
        if existing.dataset_fingerprint != self.dataset_fingerprint:
            raise StoreMismatchError(
                f"store {uri} was built from another dataset: its fingerprint is "
                f"{existing.dataset_fingerprint[:16]}… ({existing.dataset_name}), this dataset's "
                f"is {self.dataset_fingerprint[:16]}… ({self.dataset_name})"
            )
        diffs = differences(existing._record(), self._record(), "store")
        if diffs:
            raise StoreMismatchError(
                f"store {uri} was made with other settings than the config: "
                + "; ".join(diffs)
                + "; use a new store URI or the original config"
            )

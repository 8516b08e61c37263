"""Table views of results: every result a user may want to tabulate (in a notebook, as
Parquet) gives ``to_arrow()``, a :class:`pyarrow.Table`, and ``to_pandas()``, a
:class:`pandas.DataFrame` of the same columns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd


class Tabular(ABC):
    """A result with a table view."""

    @abstractmethod
    def to_arrow(self) -> pa.Table:
        """The result as an Arrow table."""

    def to_pandas(self) -> pd.DataFrame:
        """The result as a pandas DataFrame (the columns of :meth:`to_arrow`)."""
        return self.to_arrow().to_pandas()


def records_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    """One row per record; the columns are every key in order of first appearance, null
    where a record lacks the key."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    return pa.table({key: [record.get(key) for record in records] for key in columns})


def points_table(labels: np.ndarray, **columns: np.ndarray) -> pa.Table:
    """One row per training point: its ``index``, its ``label`` (``labels (n,)``), then
    ``columns``, each ``(n,)``."""
    return pa.table({"index": np.arange(len(labels)), "label": labels, **columns})

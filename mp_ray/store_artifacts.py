"""What a store holds besides its retrained rows: the artifacts later commands saved in it.

Each kind of artifact is a Zarr group of the experiment's store, and is complete once its
metadata is written (written last; see each writer):

- ``datamodels/<name>`` (:mod:`mp_ray.datamodels.storage`): metadata attribute
  ``mp_ray_datamodels``;
- ``distill`` (:mod:`mp_ray.distill.storage`): metadata attribute ``mp_ray_distill``;
- ``valuation/<name>`` (:class:`mp_ray.apps.valuation.ValuationResult`): the run's fields
  (method, evaluations, …) as attributes.

The group names and attributes are defined here, where ``mp-ray inspect`` reads them
without importing the writers (and torch with them); the writers import them from here.
Any other group at the store's top level is listed as ``unknown``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from mp_ray.store import ExperimentStore

DATAMODELS_GROUP = "datamodels"
DATAMODELS_META = "mp_ray_datamodels"
DISTILL_GROUP = "distill"
DISTILL_META = "mp_ray_distill"
VALUATION_GROUP = "valuation"
VALUATION_COMPLETE_ATTR = "method"  # one of the run's fields, all written last


def artifacts(store: ExperimentStore) -> list[dict[str, Any]]:
    """One entry per artifact: ``{"kind", "name", "group", "complete", "facts"}`` (the
    distilled datamodel has no name: None), where ``facts`` holds the key facts its
    metadata records (empty when incomplete; a fact an older writer did not record is
    absent), in the order datamodels, distilled datamodel, valuations, unknown groups."""
    root = store.group
    found: list[dict[str, Any]] = []
    for name, group in _members(root, DATAMODELS_GROUP):
        meta = dict(group.attrs.get(DATAMODELS_META, {}))
        facts = _datamodels_facts(meta, group) if meta else {}
        found.append(_entry("datamodels", name, f"{DATAMODELS_GROUP}/{name}", bool(meta), facts))
    if DISTILL_GROUP in root:
        meta = dict(root[DISTILL_GROUP].attrs.get(DISTILL_META, {}))
        facts = _distill_facts(meta) if meta else {}
        found.append(_entry("distilled datamodel", None, DISTILL_GROUP, bool(meta), facts))
    for name, group in _members(root, VALUATION_GROUP):
        meta = dict(group.attrs)
        complete = VALUATION_COMPLETE_ATTR in meta
        facts = _valuation_facts(meta) if complete else {}
        found.append(_entry("valuation", name, f"{VALUATION_GROUP}/{name}", complete, facts))
    known = {DATAMODELS_GROUP, DISTILL_GROUP, VALUATION_GROUP}
    for name in sorted(set(root.group_keys()) - known):
        found.append(_entry("unknown", name, name, False, {}))
    return found


def _members(root: zarr.Group, parent: str) -> list[tuple[str, zarr.Group]]:
    """The subgroups of ``root[parent]`` by name; none where it does not exist."""
    if parent not in root:
        return []
    return sorted(root[parent].groups(), key=lambda member: member[0])


def _entry(
    kind: str, name: str | None, group: str, complete: bool, facts: dict[str, Any]
) -> dict[str, Any]:
    return {"kind": kind, "name": name, "group": group, "complete": complete, "facts": facts}


def _recorded(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The ``keys`` that ``record`` holds, with their values."""
    return {key: record[key] for key in keys if key in record}


def _datamodels_facts(meta: dict[str, Any], group: zarr.Group) -> dict[str, Any]:
    """Shape, rows, the λ chosen per target (median and range, standardised units) and the
    held-out LDS of datamodels."""
    facts = _recorded(
        meta, "n_targets", "n_train", "rows", "mean_nonzero", "test_lds", "test_lds_targets"
    )
    if "lam" in group:
        lam = np.asarray(group["lam"][:], dtype=np.float64)
        if lam.size:
            facts["lambda"] = {
                "median": float(np.median(lam)),
                "min": float(lam.min()),
                "max": float(lam.max()),
            }
    return facts


def _distill_facts(meta: dict[str, Any]) -> dict[str, Any]:
    """Groups, synthetic examples, step size, objective and fit residual of a distilled
    datamodel."""
    return {
        **_recorded(meta, "n_groups", "per_group", "eta", "n_train", "n_params"),
        **_recorded(meta.get("distill") or {}, "objective"),
        **_recorded(meta.get("report") or {}, "residual", "retrained_models"),
    }


def _valuation_facts(meta: dict[str, Any]) -> dict[str, Any]:
    """Method, utility metric, samples, utility evaluations, convergence and what answered
    "the model trained on S" (``predictor`` or ``retrain``) of a valuation run."""
    params = meta.get("params") or {}
    return {
        **_recorded(meta, "method", "n_evaluations", "converged", "seconds"),
        **_recorded(params, "metric", "samples", "models"),
    }


def format_artifacts(found: list[dict[str, Any]]) -> str:
    """A plain-text rendering of :func:`artifacts`: one line per artifact (group, kind,
    complete or not, key facts)."""
    if not found:
        return "artifacts  none besides the rows"
    width = max(len(entry["group"]) for entry in found)
    lines = [f"artifacts  {len(found)} besides the rows"]
    for entry in found:
        if entry["kind"] == "unknown":
            state, facts = "", "not an mp-ray artifact"
        elif entry["complete"]:
            state, facts = "complete", _DESCRIBE[entry["kind"]](entry["facts"])
        else:
            state, facts = "incomplete", "no metadata: an interrupted write"
        lines.append(f"  {entry['group']:<{width}}  {entry['kind']:<19}  {state:<10}  {facts}")
    return "\n".join(lines)


def _number(value: float | None, spec: str = ".4g") -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:{spec}}"


def _describe_datamodels(facts: dict[str, Any]) -> str:
    parts = [f"{facts.get('n_targets', '?')} targets × {facts.get('n_train', '?')} points"]
    rows = facts.get("rows") or {}
    if rows:
        parts.append(f"fitted on {rows['train']} + {rows['val']} rows")
    if "lambda" in facts:
        lam = facts["lambda"]
        parts.append(
            f"λ median {_number(lam['median'])} ({_number(lam['min'])}–{_number(lam['max'])})"
        )
    if "mean_nonzero" in facts:
        parts.append(f"{facts['mean_nonzero']:.1f} non-zero weights on average")
    if "test_lds" in facts:
        lds = f"LDS {_number(facts['test_lds'], '.3f')} on {rows.get('test', '?')} held-out rows"
        if "test_lds_targets" in facts:
            lds += (
                f" (mean over the {facts['test_lds_targets']} of {facts.get('n_targets', '?')} "
                "targets whose correlation is defined)"
            )
        parts.append(lds)
    return "; ".join(parts)


def _describe_distill(facts: dict[str, Any]) -> str:
    parts = [
        f"{facts.get('n_groups', '?')} groups × {facts.get('per_group', '?')} synthetic "
        f"examples; η = {_number(facts.get('eta'))}; n = {facts.get('n_train', '?')}, "
        f"d = {facts.get('n_params', '?')}"
    ]
    if "objective" in facts:
        parts.append(f"objective {facts['objective']}")
    if "residual" in facts:
        parts.append(f"relative residual {_number(facts['residual'])}")
    if "retrained_models" in facts:
        parts.append(f"{facts['retrained_models']} models retrained")
    return "; ".join(parts)


def _describe_valuation(facts: dict[str, Any]) -> str:
    parts = [str(facts["method"])]
    if "metric" in facts:
        parts.append(f"metric {facts['metric']}")
    if "samples" in facts:
        parts.append(f"{facts['samples']:,} samples")
    if "n_evaluations" in facts:
        parts.append(f"{facts['n_evaluations']:,} utility evaluations")
    if "converged" in facts:
        parts.append("converged" if facts["converged"] else "not converged")
    models = {"predictor": "the predictor", "retrain": "retraining"}.get(facts.get("models"))
    parts.append(f"models from {models}" if models else "models: not recorded")
    return "; ".join(parts)


_DESCRIBE = {
    "datamodels": _describe_datamodels,
    "distilled datamodel": _describe_distill,
    "valuation": _describe_valuation,
}

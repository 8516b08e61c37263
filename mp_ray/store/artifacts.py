"""What a store holds besides its retrained rows: the named results later commands save in
it (artifacts), written and read only through :class:`Artifacts`.

Each artifact is a Zarr group of the experiment's store: its arrays, then its metadata as
JSON attributes, written last, so a group without them is an interrupted write that is
listed as incomplete and refused by :meth:`Artifacts.read`. Kinds and their layout:

- ``datamodels/<name>`` (:mod:`mp_ray.datamodels.storage`): arrays ``weights``, ``bias``,
  ``lam``, ``val_mse``, ``val_path``, ``lambdas``; metadata in attribute
  ``mp_ray_datamodels`` (complete when non-empty);
- ``distill`` (:mod:`mp_ray.distill.storage`), one per store: arrays ``groups``, ``theta``,
  ``features``, ``labels``, ``weights``, ``single``, ``unions``, ``union_params``;
  metadata in attribute ``mp_ray_distill`` (complete when non-empty); it may instead be the
  root of a Zarr group of its own at ``distill.uri`` (:meth:`Artifacts.at_own_uri`);
- ``valuation/<name>`` (:class:`mp_ray.apps.valuation.ValuationResult`): arrays
  ``values``, ``stderr``, ``counts``, and for Monte-Carlo results saved since they were
  kept, the running moments ``moment_count``, ``moment_mean``, ``moment_m2`` (streams × n);
  the run's fields (method, evaluations, …) are the
  attributes themselves, written together (complete once ``method`` is there).

``mp-ray inspect`` lists them (:meth:`Artifacts.list`) without importing the writers (and
torch with them). Any other group at the store's top level is listed as ``unknown``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zarr

from mp_ray.errors import MpRayError
from mp_ray.store.location import open_store
from mp_ray.store.spec import SPEC_ATTR, StoreMismatchError

ArtifactKind = Literal["datamodels", "distill", "valuation"]


class ArtifactNotFoundError(MpRayError, FileNotFoundError):
    """No artifact of that kind and name where one was expected."""


class ArtifactIncompleteError(ArtifactNotFoundError):
    """The artifact's group is there without its metadata: an interrupted write."""


@dataclass(frozen=True)
class _Kind:
    """Where a kind of artifact lives and what marks it complete."""

    label: str  # what ``mp-ray inspect`` calls it
    group: str  # its top-level group: named artifacts are its subgroups
    named: bool
    arrays: tuple[str, ...]
    meta_attr: str | None  # the attribute holding the metadata; None: every attribute
    complete_attr: str | None = None  # with meta_attr None: the field marking completion
    own_uri: str | None = None  # the config field that saves it outside the store instead
    optional: tuple[str, ...] = ()  # arrays an artifact may have besides ``arrays``

    @property
    def every_array(self) -> tuple[str, ...]:
        return self.arrays + self.optional


_KINDS: dict[str, _Kind] = {
    "datamodels": _Kind(
        "datamodels",
        "datamodels",
        True,
        ("weights", "bias", "lam", "val_mse", "val_path", "lambdas"),
        "mp_ray_datamodels",
    ),
    "distill": _Kind(
        "distilled datamodel",
        "distill",
        False,
        ("groups", "theta", "features", "labels", "weights", "single", "unions", "union_params"),
        "mp_ray_distill",
        own_uri="distill.uri",
    ),
    "valuation": _Kind(
        "valuation",
        "valuation",
        True,
        ("values", "stderr", "counts"),
        None,
        "method",
        optional=("moment_count", "moment_mean", "moment_m2"),
    ),
}


def _called(kind: ArtifactKind, name: str | None) -> str:
    """An artifact as messages name it."""
    return _KINDS[kind].label + ("" if name is None else f" {name!r}")


def _stored_attrs(kind: _Kind, meta: dict[str, Any]) -> dict[str, Any]:
    """The group attributes that record ``meta``."""
    return dict(meta) if kind.meta_attr is None else {kind.meta_attr: meta}


def _completed(kind: _Kind, attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The metadata in a group's ``attrs``; None where they do not mark it complete."""
    if kind.meta_attr is None:
        return dict(attrs) if kind.complete_attr in attrs else None
    return dict(attrs.get(kind.meta_attr) or {}) or None


class Artifacts:
    """The artifacts under a Zarr group: an experiment store's (``store.artifacts``), or the
    one artifact of kind ``at_root`` that is the group itself (:meth:`at_own_uri`)."""

    def __init__(self, root: zarr.Group, uri: str, at_root: ArtifactKind | None = None) -> None:
        self.root = root
        self.uri = uri
        self.at_root = at_root

    @classmethod
    def at_own_uri(
        cls,
        uri: str,
        storage_options: dict[str, Any] | None,
        kind: ArtifactKind,
        write: bool,
    ) -> Artifacts:
        """The artifact of ``kind`` saved as a Zarr group of its own at ``uri`` (created when
        ``write``); an experiment store or other Zarr content there is refused
        (:class:`StoreMismatchError`), a missing group is :class:`ArtifactNotFoundError`."""
        spec = _KINDS[kind]
        if spec.own_uri is None:
            raise ValueError(f"a {spec.label} is only saved in an experiment store")
        try:
            root = zarr.open_group(
                open_store(uri, storage_options, read_only=not write), mode="a" if write else "r"
            )
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no {spec.label} at {uri}") from None
        if SPEC_ATTR in root.attrs:
            raise StoreMismatchError(
                f"{spec.own_uri} {uri} is an experiment store; leave {spec.own_uri} unset to "
                f"save in its '{spec.group}' group"
            )
        unknown = set(root.keys()) - set(spec.every_array)
        if unknown:
            raise StoreMismatchError(
                f"{spec.own_uri} {uri} holds other Zarr content ({', '.join(sorted(unknown))}), "
                f"not a {spec.label}"
            )
        return cls(root, uri, kind)

    # -- one artifact ----------------------------------------------------------------------

    def _path(self, kind: ArtifactKind, name: str | None) -> str:
        """The artifact's group path under the root ("" for the root itself)."""
        spec = _KINDS[kind]
        if self.at_root is not None:
            if kind != self.at_root or name is not None:
                raise ValueError(f"{self.uri} holds one {_KINDS[self.at_root].label} only")
            return ""
        if not spec.named:
            if name is not None:
                raise ValueError(f"a store holds one {spec.label}, without a name")
            return spec.group
        if not name or "/" in name:
            raise ValueError(f"a {spec.label} name must be non-empty, without '/': {name!r}")
        return f"{spec.group}/{name}"

    def write(
        self,
        kind: ArtifactKind,
        name: str | None,
        arrays: Mapping[str, np.ndarray],
        meta: dict[str, Any],
    ) -> None:
        """Replace the artifact ``kind``/``name`` (None for the distilled datamodel) by
        ``arrays`` (one per name of the kind's layout, optional ones where given) and
        ``meta`` (JSON-able), the metadata last; no other artifact, and none of the store's
        rows, is touched."""
        spec = _KINDS[kind]
        path = self._path(kind, name)
        if not set(spec.arrays) <= set(arrays) <= set(spec.every_array):
            optional = f" (and may have {', '.join(spec.optional)})" if spec.optional else ""
            raise ValueError(
                f"a {spec.label} has arrays {', '.join(spec.arrays)}{optional}; got "
                f"{', '.join(sorted(arrays))}"
            )
        attrs = _stored_attrs(spec, meta)
        if _completed(spec, attrs) is None:
            raise ValueError(f"this metadata would not mark the {spec.label} complete")
        if not path:  # the root itself: unmark it first, then overwrite its arrays
            for key in [key for key in attrs if key in self.root.attrs]:
                del self.root.attrs[key]
            group = self.root
        elif spec.named:
            group = self.root.require_group(spec.group).create_group(name, overwrite=True)
        else:
            group = self.root.create_group(path, overwrite=True)
        for key in arrays:
            group.create_array(key, data=np.ascontiguousarray(arrays[key]), overwrite=True)
        group.attrs.update(attrs)

    def read(
        self, kind: ArtifactKind, name: str | None = None, fingerprint: str | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The arrays (the optional ones it has too) and metadata of the artifact
        ``kind``/``name``; raises
        :class:`ArtifactNotFoundError` when it is absent, :class:`ArtifactIncompleteError`
        when its write was interrupted, and :class:`StoreMismatchError` when ``fingerprint``
        is given and the artifact was fitted on another dataset."""
        spec = _KINDS[kind]
        path = self._path(kind, name)
        try:
            group = self.root[path] if path else self.root
        except KeyError:
            raise ArtifactNotFoundError(f"{self.uri} holds no {_called(kind, name)}") from None
        meta = _completed(spec, group.attrs.asdict())
        if meta is None:
            raise ArtifactIncompleteError(
                f"the {_called(kind, name)} in {self.uri} was not completely written"
            )
        recorded = meta.get("dataset_fingerprint")
        if fingerprint is not None and recorded != fingerprint:
            raise StoreMismatchError(
                f"the {_called(kind, name)} in {self.uri} was fitted on another dataset "
                f"(fingerprint {str(recorded)[:16]}…) than this one ({fingerprint[:16]}…)"
            )
        return {key: group[key][...] for key in spec.every_array if key in group}, meta

    # -- listing ---------------------------------------------------------------------------

    def _groups(self, spec: _Kind) -> list[tuple[str | None, zarr.Group]]:
        """The groups of artifacts of a kind, by name (None for an unnamed kind)."""
        if spec.group not in self.root:
            return []
        if not spec.named:
            return [(None, self.root[spec.group])]
        return sorted(self.root[spec.group].groups(), key=lambda member: member[0])

    def list(self) -> list[dict[str, Any]]:
        """One entry per artifact of an experiment store: ``{"kind", "name", "group",
        "complete", "facts"}`` (the distilled datamodel has no name: None), where ``facts``
        holds the key facts its metadata records (empty when incomplete; a fact an older
        writer did not record is absent), in the order datamodels, distilled datamodel,
        valuations, unknown groups."""
        found: list[dict[str, Any]] = []
        for kind, spec in _KINDS.items():
            for name, group in self._groups(spec):
                meta = _completed(spec, group.attrs.asdict())
                facts = _FACTS[kind](meta, group) if meta is not None else {}
                path = spec.group if name is None else f"{spec.group}/{name}"
                found.append(_entry(spec.label, name, path, meta is not None, facts))
        known = {spec.group for spec in _KINDS.values()}
        for name in sorted(set(self.root.group_keys()) - known):
            found.append(_entry("unknown", name, name, False, {}))
        return found


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


def _distill_facts(meta: dict[str, Any], group: zarr.Group) -> dict[str, Any]:
    """Groups, synthetic examples, step size, objective and fit residual of a distilled
    datamodel."""
    return {
        **_recorded(meta, "n_groups", "per_group", "eta", "n_train", "n_params"),
        **_recorded(meta.get("distill") or {}, "objective"),
        **_recorded(meta.get("report") or {}, "residual", "retrained_models"),
    }


def _valuation_facts(meta: dict[str, Any], group: zarr.Group) -> dict[str, Any]:
    """Method, utility metric, samples, utility evaluations, convergence and what answered
    "the model trained on S" (``predictor`` or ``retrain``) of a valuation run."""
    params = meta.get("params") or {}
    return {
        **_recorded(meta, "method", "n_evaluations", "converged", "seconds"),
        **_recorded(params, "metric", "samples", "models"),
    }


_FACTS = {
    "datamodels": _datamodels_facts,
    "distill": _distill_facts,
    "valuation": _valuation_facts,
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

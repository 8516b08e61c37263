"""A fitted ModelPred predictor: subsets in, parameter vectors out, no training and no Ray.

A checkpoint is a directory (local or any fsspec URL such as ``s3://``) holding::

    model.pt          the SetFunction's state dict, with the mean training mask m̄ it is
                      centred on (absent in checkpoints written before centring: those
                      load uncentred and predict as they did)
    predictor.json    widths, pooling, target coordinates (scaler), class count, and the identity of
                      the store it was fitted on (dataset fingerprint, learner, sampler,
                      seed; :mod:`mp_ray.store.identity`)
    elements.npy      the ground set's set elements z_i = [x_i, onehot(y_i)], (n, e)

so :meth:`Predictor.load` needs nothing else. Predicting B models costs one ``masks @ Φ``
with Φ = φ(Z) cached, plus ρ.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
import torch

from mp_ray.errors import MpRayError
from mp_ray.methods import Masks, check_masks, mask_tensor
from mp_ray.predictor.model import Pooling, SetFunction, element_features
from mp_ray.predictor.scaling import Scaler, scaler_from_json
from mp_ray.store.identity import MODELS_UNREAD, Identity, check_identity, make_identity
from mp_ray.store.storage_errors import check_bucket, storage_errors

if TYPE_CHECKING:
    from mp_ray.config import ExperimentConfig

MODEL_FILE = "model.pt"
META_FILE = "predictor.json"
ELEMENTS_FILE = "elements.npy"
CHECKPOINT_FILES = (MODEL_FILE, META_FILE, ELEMENTS_FILE)


class PredictorNotFoundError(MpRayError, FileNotFoundError):
    """No predictor checkpoint where one was named."""


@dataclass
class PredictorMeta:
    """What a checkpoint records besides the weights; ``learner`` and
    ``dataset_fingerprint`` are the store's, ``store_identity`` the store's whole identity
    (None in checkpoints written before it was recorded); ``pooling`` the set function's
    (:class:`~mp_ray.predictor.model.SetFunction`)."""

    width: int
    n_params: int
    n_classes: int
    scaler: Scaler
    learner: dict[str, Any]
    dataset_fingerprint: str
    store_uri: str
    extra: dict[str, Any] = field(default_factory=dict)
    store_identity: Identity | None = None
    pooling: Pooling = "views"

    @property
    def identity(self) -> Identity:
        """The store's identity; for an older checkpoint, the dataset and learner alone."""
        if self.store_identity is not None:
            return self.store_identity
        return make_identity(self.dataset_fingerprint, self.learner)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "scaler": self.scaler.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PredictorMeta:
        return cls(**{**data, "scaler": scaler_from_json(data["scaler"])})


class Predictor:
    """f(S) ≈ θ(S) for subsets of one ground set (and points added to it)."""

    def __init__(self, model: SetFunction, elements: torch.Tensor, meta: PredictorMeta) -> None:
        self.model = model.eval()
        self.elements = elements
        self.meta = meta
        with torch.no_grad():
            self.phi = model.embed(elements)

    @property
    def n_train(self) -> int:
        return int(self.elements.shape[0])

    @torch.no_grad()
    def predict(self, masks: Masks) -> torch.Tensor:
        """Predicted parameters ``(B, d)`` of the models trained on ``masks (B, n)``."""
        masks = check_masks(masks, self.n_train).to(torch.float32)
        pooled = self.model.pooled(masks, self.phi, self.n_train)
        return self.meta.scaler.inverse(self.model.from_pooled(pooled))

    def predict_soft(self, weights: torch.Tensor) -> torch.Tensor:
        """Parameters ``(B, d)`` for fractional memberships ``weights (B, n)`` in [0, 1],
        differentiable in ``weights`` (the continuous relaxation of data selection); a
        {0, 1} row gives :meth:`predict`'s answer."""
        weights = mask_tensor(weights, self.n_train, "weights").to(torch.float32)
        pooled = self.model.pooled(weights, self.phi, self.n_train)
        return self.meta.scaler.inverse(self.model.from_pooled(pooled))

    @torch.no_grad()
    def predict_with_points(
        self,
        masks: Masks,
        X_new: np.ndarray,
        y_new: np.ndarray,
        new_masks: Masks,
    ) -> torch.Tensor:
        """Parameters ``(B, d)`` of models trained on ``masks (B, n)`` of the ground set plus
        ``new_masks (B, m)`` of m new points ``X_new (m, p)``, ``y_new (m,)``.

        New points enter the same pooled sum through their own φ; the size feature counts
        them too (relative to the ground-set size n the predictor was fitted on). Centring
        subtracts the same m̄ of the ground set as always: a new point is in no training
        subset (its m̄ is 0), so it adds its whole φ, as a ground-set point outside every
        training subset would.
        """
        masks = check_masks(masks, self.n_train).to(torch.float32)
        new_masks = check_masks(new_masks, len(y_new), "new_masks").to(torch.float32)
        if new_masks.shape[0] != masks.shape[0]:
            raise ValueError("masks and new_masks must describe the same number of subsets")
        phi_new = self.model.embed(element_features(X_new, y_new, self.meta.n_classes))
        pooled = self.model.pooled(
            torch.cat([masks, new_masks], dim=1), torch.cat([self.phi, phi_new]), self.n_train
        )
        return self.meta.scaler.inverse(self.model.from_pooled(pooled))

    # -- checkpoints -----------------------------------------------------------------------

    def save(self, directory: str, storage_options: dict[str, Any] | None = None) -> None:
        """Write the checkpoint files into ``directory`` (local path or fsspec URL)."""
        model, elements = io.BytesIO(), io.BytesIO()
        torch.save(self.model.state_dict(), model)
        np.save(elements, self.elements.numpy())
        files = {
            MODEL_FILE: model.getvalue(),
            META_FILE: json.dumps(self.meta.to_json(), indent=2).encode(),
            ELEMENTS_FILE: elements.getvalue(),
        }
        check_bucket(directory, storage_options)
        with storage_errors(directory, storage_options):
            fs, root = fsspec.core.url_to_fs(directory, **(storage_options or {}))
            fs.makedirs(root, exist_ok=True)
            for name, data in files.items():
                fs.pipe_file(f"{root}/{name}", data)

    @classmethod
    def load(cls, directory: str, storage_options: dict[str, Any] | None = None) -> Predictor:
        """Read a checkpoint written by :meth:`save` (no Ray needed)."""
        check_bucket(directory, storage_options)
        with storage_errors(directory, storage_options):
            fs, root = fsspec.core.url_to_fs(directory, **(storage_options or {}))
            if not fs.exists(f"{root}/{META_FILE}"):
                raise PredictorNotFoundError(f"no mp-ray predictor checkpoint at {directory}")
            files = {name: fs.cat_file(f"{root}/{name}") for name in CHECKPOINT_FILES}
        meta = PredictorMeta.from_json(json.loads(files[META_FILE]))
        elements = torch.as_tensor(np.load(io.BytesIO(files[ELEMENTS_FILE])))
        state = torch.load(io.BytesIO(files[MODEL_FILE]), weights_only=True)
        model = SetFunction(
            elements.shape[1], meta.n_params, meta.width, state.get("center"), meta.pooling
        )
        model.load_state_dict(state)
        return cls(model, elements, meta)


def load_predictor_for(
    uri: str,
    config: ExperimentConfig,
    fingerprint: str,
    storage_options: dict[str, Any] | None = None,
) -> Predictor:
    """The predictor at ``uri``, refused (:class:`~mp_ray.store.StoreMismatchError`) unless
    fitted on a store of ``config``'s dataset (``fingerprint``) and learner."""
    predictor = Predictor.load(uri, storage_options)
    check_identity(predictor.meta.identity, config, fingerprint, "predictor", uri, MODELS_UNREAD)
    return predictor

"""The application service: every application over one :class:`AppContext`, each taking
one request (:mod:`mp_ray.apps.service.requests`) and returning one answer
(:mod:`mp_ray.apps.service.answers`). The command line and Ray Serve both call it, so a
request gets the same answer from either.

Input that depends on the ground set (index ranges, mask lengths, feature counts, class
ids) is refused with :class:`RequestError` naming the request's field, as are sizes and
fractions the applications cannot meet. With a predictor and a check budget, every answer
is checked against retraining on cases of its own kind (:mod:`mp_ray.apps.checks`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mp_ray.apps import checks
from mp_ray.apps.addition import MODELPRED, add_points
from mp_ray.apps.calibration import calibrate, subsample_masks
from mp_ray.apps.context import AppContext
from mp_ray.apps.counterfactual import counterfactual_removal
from mp_ray.apps.memorization import DEFAULT_SUBSETS, memorization
from mp_ray.apps.models import PredictedModels, SubsetModels, retrain_below_for
from mp_ray.apps.selection import compare_selections, greedy_selection, relaxed_selection
from mp_ray.apps.service.answers import (
    AddAnswer,
    CalibrateAnswer,
    CounterfactualAnswer,
    MemorizationAnswer,
    ModelAnswer,
    SelectAnswer,
    ValueAnswer,
)
from mp_ray.apps.service.requests import (
    AddRequest,
    CalibrateRequest,
    CounterfactualRequest,
    MemorizationRequest,
    PredictRequest,
    RequestError,
    SelectRequest,
    Subset,
    ValueRequest,
)
from mp_ray.apps.utility import Utility, class_probabilities
from mp_ray.apps.valuation import (
    SamplingState,
    banzhaf_msr,
    beta_shapley,
    leave_one_out,
    tmc_shapley,
)
from mp_ray.apps.valuation.tasks import noisy_label_detection, removal_curve
from mp_ray.errors import InputError
from mp_ray.indices import checked_points

# Progress of a valuation: samples drawn, samples expected in all (None: unknown yet), and
# models scored so far.
ValueProgress = Callable[[int, int | None, int], None]


class AppService:
    """The applications of one experiment: its data and learner, and models for subsets
    from a fitted predictor or by retraining (``context``)."""

    def __init__(self, context: AppContext) -> None:
        self.context = context

    @property
    def n_train(self) -> int:
        return self.context.dataset.n_train

    def _checking(self, budget: int) -> bool:
        """Whether to check an answer against retraining: a predictor answered, and a
        budget."""
        return self.context.source == "predictor" and budget > 0

    # -- input checks ----------------------------------------------------------------------

    def points(self, indices: list[int], n: int, field: str) -> np.ndarray:
        """``indices`` as int64 ``(r,)``, each in ``[0, n)`` and none repeated."""
        try:
            return checked_points(indices, n, field)
        except InputError as err:
            raise RequestError(field, str(err)) from err

    def mask(self, subset: Subset) -> np.ndarray:
        """The subset as a bool mask ``(n,)``; indices and mask length checked."""
        n = self.n_train
        if subset.mask is not None:
            if len(subset.mask) != n:
                raise RequestError("mask", f"must have {n} entries, got {len(subset.mask)}")
            return np.asarray(subset.mask, dtype=bool)
        indices = subset.indices or []
        if len(indices) > n:
            raise RequestError("indices", f"at most {n} entries, one per training point")
        index = np.asarray(indices, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= n):
            raise RequestError("indices", f"indices must lie in [0, {n})")
        mask = np.zeros(n, dtype=bool)
        mask[index] = True
        return mask

    def inputs(self, rows: list[list[float]], field: str = "inputs") -> np.ndarray:
        """Feature rows as float32 ``(m, p)``, their width and range checked."""
        p = self.context.dataset.n_features
        with np.errstate(over="ignore"):
            X = np.asarray(rows, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != p:
            raise RequestError(field, f"each row must have {p} features")
        if not np.isfinite(X).all():
            raise RequestError(field, "values must lie within float32's range (±3.4e38)")
        return X

    def labelled(
        self, rows: list[list[float]], labels: list[int] | list[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labelled rows: ``inputs (m, p)`` float32 and ``labels (m,)`` as the dataset's
        labels (class ids in range for classification)."""
        X = self.inputs(rows)
        classes = self.context.learner.n_classes
        y = np.asarray(labels, dtype=self.context.dataset.y_test.dtype)
        if classes > 1 and (
            not all(isinstance(label, int) for label in labels)
            or (len(y) and (y.min() < 0 or y.max() >= classes))
        ):
            raise RequestError("labels", f"must be class ids in [0, {classes})")
        return X, y

    # -- the model for a subset ------------------------------------------------------------

    def model(
        self, size: int, params: torch.Tensor, rows: list[list[float]] | None, field: str
    ) -> ModelAnswer:
        """A model of ``size`` points: its ``params (d,)``, or its predictions on ``rows``."""
        if rows is None:
            return ModelAnswer(n_points=size, params=params.tolist())
        learner = self.context.learner
        X = self.inputs(rows, field)
        theta = params[None]
        answer = ModelAnswer(
            n_points=size, predictions=learner.predict(theta, X)[0].double().tolist()
        )
        if learner.n_classes > 1:
            answer.probabilities = class_probabilities(learner, theta, X)[0].tolist()
        return answer

    def predict(self, request: PredictRequest, params: torch.Tensor | None = None) -> ModelAnswer:
        """The model trained on the request's subset (its ``params (d,)`` when already
        predicted, say in a batch)."""
        mask = self.mask(request)
        if params is None:
            params = self.context.models.predict(mask[None])[0]
        return self.model(int(mask.sum()), params, request.inputs, "inputs")

    # -- applications ----------------------------------------------------------------------

    def retrained_prefixes(self, request: ValueRequest) -> int:
        """Below how many points a valuation's subsets are retrained: ``retrain_below``
        (auto when None) for tmc and beta from a predictor, else 0."""
        if not isinstance(self.context.models, PredictedModels):
            return 0
        if request.method not in ("tmc", "beta"):
            return 0
        setting = "auto" if request.retrain_below is None else request.retrain_below
        return retrain_below_for(setting, self.context.learner)

    def valuing_models(self, request: ValueRequest) -> SubsetModels:
        """The models a valuation asks: a predictor's with the permutation methods' short
        prefixes retrained (:meth:`retrained_prefixes`), or retraining."""
        below = self.retrained_prefixes(request)
        models = self.context.models
        return models.retraining_below(below) if isinstance(models, PredictedModels) else models

    def value(
        self,
        request: ValueRequest,
        on_progress: ValueProgress | None = None,
        store_name: str | None = None,
    ) -> ValueAnswer:
        """Value every training point; save the values in the experiment's store under
        ``store_name`` when given (refused before the run if the store is another
        experiment's)."""
        from mp_ray.store import ExperimentStore
        from mp_ray.store.identity import MODELS_UNREAD

        context, data = self.context, self.context.dataset
        store = None
        if store_name:
            store = ExperimentStore.open_for(
                context.config, data.fingerprint, MODELS_UNREAD, read_only=False
            )
        models = self.valuing_models(request)
        utility = Utility(models, data.X_val, data.y_val, request.metric)
        stopping, policy, seed = request.stopping(), request.truncation_policy(), request.seed

        def advance(state: SamplingState) -> None:
            # The samples at which the criterion would be met, from its completion.
            completion = stopping.completion(state)
            total = round(state.samples / completion) if completion > 0 else None
            if on_progress is not None:
                on_progress(state.samples, total, utility.evaluations)

        if request.method == "loo":
            result = leave_one_out(utility)
        elif request.method == "tmc":
            result = tmc_shapley(utility, stopping, seed, policy, on_progress=advance)
        elif request.method == "beta":
            result = beta_shapley(
                utility, stopping, request.alpha, request.beta, seed, on_progress=advance
            )
        else:
            result = banzhaf_msr(utility, stopping, seed, on_progress=advance)
        result.params.update(dataset_fingerprint=data.fingerprint, models=context.source)
        result.params["retrain_below"] = self.retrained_prefixes(request)
        fidelity = None
        if self._checking(request.budget):
            fidelity = checks.value_check(
                models,
                context.retrained,
                utility,
                request.method,
                request.budget,
                seed,
                request.alpha,
                request.beta,
                policy,
            )
            result.params["fidelity"] = fidelity.to_json()
        detection = (
            noisy_label_detection(result.values, data.flipped) if len(data.flipped) else None
        )
        test_utility = Utility(context.retrained, data.X_test, data.y_test, "accuracy")
        curves = (
            [removal_curve(test_utility, result.values, order) for order in ("high", "low")]
            if request.removal_curves
            else []
        )
        if store is not None:
            result.to_store(store, store_name)
        saved_in = store.uri if store else None
        return ValueAnswer(result, data.y_train, fidelity, detection, curves, saved_in)

    def select(self, request: SelectRequest, baseline: np.ndarray | None = None) -> SelectAnswer:
        """Select on the validation split; retrain the selection and random subsets of its
        size (and the top-``size`` points by ``baseline (n,)`` values) and score them on the
        test split."""
        context, data = self.context, self.context.dataset
        models = context.models
        fidelity = None
        try:  # a size the method cannot reach (above n; greedy: below one point per class)
            if request.method == "relaxed":
                if not isinstance(models, PredictedModels):
                    raise RequestError(
                        "method", "method relaxed needs --predictor (it differentiates through it)"
                    )
                result = relaxed_selection(
                    models, data.X_val, data.y_val, request.size, seed=request.seed
                )
            else:
                utility = Utility(context.models, data.X_val, data.y_val, "accuracy")
                result = greedy_selection(
                    utility,
                    request.size,
                    seed=request.seed,
                    objective=request.objective,
                    holdout=request.holdout,
                )
            test_utility = Utility(context.retrained, data.X_test, data.y_test, "accuracy")
            chosen = {request.method: result.mask}
            scores = (
                compare_selections(test_utility, chosen, request.size, baseline, seed=request.seed)
                if request.test_scores
                else {}
            )
            if self._checking(request.budget):
                fidelity = checks.selection_check(
                    context.models,
                    context.retrained,
                    data.X_val,
                    data.y_val,
                    result.mask,
                    "neg_loss",
                    request.budget,
                    request.seed,
                )
        except RequestError:
            raise
        except ValueError as err:
            raise RequestError("size", str(err)) from err
        return SelectAnswer(result, data.y_train, scores, fidelity)

    def memorization_subsets(self, request: MemorizationRequest) -> int:
        """The subsets a memorisation request samples (its own, else the default of how
        models are obtained)."""
        return request.subsets or DEFAULT_SUBSETS[self.context.source]

    def memorization(
        self, request: MemorizationRequest, on_progress: Callable[[int], None] | None = None
    ) -> MemorizationAnswer:
        """Memorisation of every training point and its influence on every test point;
        ``on_progress`` is told the models of each block as it is scored."""
        context, data = self.context, self.context.dataset
        subsets = self.memorization_subsets(request)
        fidelity = None
        try:
            result = memorization(
                context.models,
                data.X_test,
                data.y_test,
                subsets,
                request.alpha,
                request.seed,
                on_progress=on_progress,
                score=request.score,
            )
            if self._checking(request.budget):
                fidelity = checks.memorization_check(
                    context.models, context.retrained, request.alpha, request.budget, request.seed
                )
        except ValueError as err:
            raise RequestError("subsets", str(err)) from err
        return MemorizationAnswer(result, data.y_train, subsets, fidelity)

    def calibrate(self, request: CalibrateRequest) -> CalibrateAnswer:
        """The ensemble's calibration on the test split against θ(D) and temperature
        scaling, and its mean class probabilities on the request's rows."""
        context, data = self.context, self.context.dataset
        learner = context.learner
        if learner.n_classes < 2:
            raise RequestError("inputs", "calibrated probabilities need a classification task")
        X = None if request.inputs is None else self.inputs(request.inputs)
        fidelity, probabilities = None, None
        try:  # a fraction that keeps no point
            result = calibrate(
                context.models,
                data.X_val,
                data.y_val,
                data.X_test,
                data.y_test,
                request.models,
                request.fraction,
                request.seed,
            )
            if X is not None:
                masks = subsample_masks(
                    self.n_train, request.models, request.fraction, request.seed
                )
                ensemble = class_probabilities(learner, self.context.models.predict(masks), X).mean(
                    dim=0
                )
                probabilities = ensemble.double().cpu().numpy()
            if self._checking(request.budget):
                fidelity = checks.calibration_check(
                    context.models,
                    context.retrained,
                    data.X_test,
                    data.y_test,
                    request.fraction,
                    request.models,
                    request.budget,
                    request.seed,
                )
        except ValueError as err:
            raise RequestError("fraction", str(err)) from err
        return CalibrateAnswer(result, probabilities, fidelity)

    def counterfactual(self, request: CounterfactualRequest) -> CounterfactualAnswer:
        """The targets' outputs under θ(D) and without the removed points."""
        context, data = self.context, self.context.dataset
        removed = self.points(request.remove, self.n_train, "remove")
        targets = None
        if request.targets is not None:
            targets = self.points(request.targets, len(data.y_test), "targets")
            X, y = data.X_test[targets], data.y_test[targets]
        else:
            X, y = self.labelled(request.inputs or [], request.labels or [])
        result = counterfactual_removal(context.models, X, y, [removed.tolist()])
        fidelity, exact = None, None
        if self._checking(request.budget):
            fidelity, exact = checks.counterfactual_check(
                context.models, context.retrained, X, y, removed, request.budget, request.seed
            )
        return CounterfactualAnswer(targets, y, removed, result, exact, fidelity)

    def add(self, request: AddRequest) -> AddAnswer:
        """The model with new points added to a subset: ModelPred, influence functions and,
        with ``check``, retraining, scored on the test points not added."""
        context, data = self.context, self.context.dataset
        models = context.models
        if not isinstance(models, PredictedModels):
            raise RequestError("predictor", "adding points needs a fitted predictor")
        X_new = np.zeros((0, data.n_features), np.float32)
        y_new = data.y_test[:0]
        if request.inputs:
            X_new, y_new = self.labelled(request.inputs, request.labels or [])
        taken = request.from_test or 0
        if taken >= len(data.y_test):
            raise RequestError(
                "from_test",
                f"from_test {taken}: the test split has {len(data.y_test)} points; "
                "leave at least one to score on",
            )
        X_new = np.concatenate([X_new, data.X_test[:taken]])
        y_new = np.concatenate([y_new, data.y_test[:taken]])
        X_eval, y_eval = data.X_test[taken:], data.y_test[taken:]
        mask = np.ones(self.n_train, bool) if request.base is None else self.mask(request.base)
        addition = add_points(
            models,
            X_new,
            y_new,
            X_eval,
            y_eval,
            masks=mask[None],
            retrain=request.check,
            influence=request.compare,
        )
        params = addition.outcomes[MODELPRED].after[0]
        model = self.model(int(mask.sum()) + len(y_new), params, request.predict_on, "predict_on")
        return AddAnswer(addition, model, len(y_new), len(y_eval))

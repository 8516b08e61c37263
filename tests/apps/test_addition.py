"""Adding points the predictor never saw (test-split points) to the ground set: ModelPred
against retraining within the predictor's validation error, influence functions beside it."""

from __future__ import annotations

import numpy as np
import pytest

from mp_ray.apps.addition import INFLUENCE, MODELPRED, RETRAINING, add_points

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def test_added_points_predicted_within_the_validation_error_of_retraining(fitted):
    data = fitted.dataset
    X_new, y_new = data.X_test[:10], data.y_test[:10]
    # Two additions to the whole ground set: the first five of the new points, and all ten.
    masks = np.ones((2, data.n_train), bool)
    new_masks = np.stack([np.arange(10) < 5, np.ones(10, bool)])
    result = add_points(
        fitted.models, X_new, y_new, data.X_test[10:], data.y_test[10:], masks, new_masks, True
    )
    outcomes = result.outcomes
    assert set(outcomes) == {MODELPRED, INFLUENCE, RETRAINING}
    validation_error = fitted.models.predictor.meta.extra["val_rel_error"]  # measured 0.40
    assert (outcomes[MODELPRED].rel_error <= validation_error).all()  # 0.17, 0.16
    assert np.isfinite(outcomes[INFLUENCE].rel_error).all()
    np.testing.assert_allclose(outcomes[RETRAINING].rel_error, 0.0)
    truth = fitted.retrained.predict(masks)
    np.testing.assert_allclose(outcomes[RETRAINING].before, truth)
    for row in result.summary().values():
        assert 0 <= row["accuracy_before"] <= 1 and 0 <= row["accuracy_after"] <= 1

    # No new point: exactly the ground-set prediction.
    none = fitted.models.predict_with_points(masks, X_new, y_new, np.zeros((2, 10), bool))
    np.testing.assert_allclose(none, fitted.models.predict(masks), rtol=1e-6, atol=1e-6)

"""Applications answered from "the model trained on S": by a predictor or by retraining."""

from mp_ray.apps.models import PredictedModels, RetrainedModels, SubsetModels
from mp_ray.apps.utility import Utility

__all__ = ["PredictedModels", "RetrainedModels", "SubsetModels", "Utility"]

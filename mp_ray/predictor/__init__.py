"""ModelPred: a set function from training subsets to trained parameters."""

from mp_ray.predictor.losses import LossWeights, kkt_residual, modelpred_loss
from mp_ray.predictor.model import SetFunction, element_features
from mp_ray.predictor.predictor import Predictor, PredictorMeta
from mp_ray.predictor.scaling import OutputScaler, TargetScaler, scaler_from_json

__all__ = [
    "LossWeights",
    "OutputScaler",
    "Predictor",
    "PredictorMeta",
    "SetFunction",
    "TargetScaler",
    "element_features",
    "kkt_residual",
    "modelpred_loss",
    "scaler_from_json",
]

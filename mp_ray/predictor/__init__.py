"""ModelPred: a set function from training subsets to trained parameters."""

from mp_ray.predictor.losses import LossWeights, kkt_residual, modelpred_loss
from mp_ray.predictor.model import SetFunction, element_features
from mp_ray.predictor.predictor import Predictor, PredictorMeta
from mp_ray.predictor.scaling import TargetScaler

__all__ = [
    "LossWeights",
    "Predictor",
    "PredictorMeta",
    "SetFunction",
    "TargetScaler",
    "element_features",
    "kkt_residual",
    "modelpred_loss",
]

"""pyDVL's TMC-Shapley on arrays from a file, run in pyDVL's own virtual environment.

pyDVL 0.10 needs numpy < 2, the rest of mp-ray numpy 2, so ``benchmarks/valuation.py``
runs this script with ``.venv-pydvl/bin/python`` (``make bench-deps`` creates it) and
exchanges arrays through ``.npz`` files.

    python pydvl_tmc.py --data in.npz --out out.npz --permutations 100 [--rtol 0.01]
        [--burn-in 0.4] [--jobs 2] [--seed 0]

``in.npz`` holds X, y (training) and X_val, y_val; ``out.npz`` receives ``values (n,)`` in
training order and ``seconds``, the wall time of ``valuation.fit`` alone.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
from joblib import parallel_config
from pydvl.valuation import (
    Dataset,
    MaxUpdates,
    ModelUtility,
    RelativeTruncation,
    SupervisedScorer,
    TMCShapleyValuation,
)
from sklearn.linear_model import LogisticRegression


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--permutations", type=int, required=True)
    parser.add_argument("--rtol", type=float, default=0.01)
    parser.add_argument("--burn-in", type=float, default=0.4)
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    arrays = np.load(args.data)
    train = Dataset(arrays["X"].astype(np.float64), arrays["y"])
    val = Dataset(arrays["X_val"].astype(np.float64), arrays["y_val"])
    # A subset with one class cannot be fitted; its utility is that of the uniform model.
    scorer = SupervisedScorer("neg_log_loss", val, default=-math.log(2))
    model = LogisticRegression(C=args.C, tol=1e-6, max_iter=10000)
    valuation = TMCShapleyValuation(
        ModelUtility(model, scorer, show_warnings=False),
        truncation=RelativeTruncation(rtol=args.rtol, burn_in_fraction=args.burn_in),
        is_done=MaxUpdates(args.permutations),
        seed=args.seed,
        show_warnings=False,
    )
    start = time.perf_counter()
    with warnings.catch_warnings(), parallel_config(n_jobs=args.jobs):
        warnings.simplefilter("ignore")
        valuation.fit(train)
    seconds = time.perf_counter() - start
    result = valuation.result
    values = np.zeros(len(arrays["y"]))
    values[np.asarray(result.indices)] = np.asarray(result.values)
    np.savez(args.out, values=values, seconds=seconds)


if __name__ == "__main__":
    main()

"""Ray job entrypoint for evaluating predictors against retraining.

    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/cluster.yaml \\
        --predictor fit=s3://my-bucket/mp-ray/predictors/digits

Runs in the job's driver (it reads the store's held-out rows and the checkpoints; no actors).
"""

from __future__ import annotations

import sys

from mp_ray.cli import app


def main() -> None:
    """Run ``mp-ray evaluate`` with this script's arguments."""
    app(["evaluate", *sys.argv[1:]], prog_name="jobs/evaluate.py")


if __name__ == "__main__":
    main()

"""Ray job entrypoint for the predictor's hyperparameter search.

    ray job submit --working-dir . -- python jobs/tune.py --config configs/cluster.yaml \\
        --samples 16 --workers-per-trial 2

Connects to the cluster that runs the job (``RAY_ADDRESS``), or starts a local Ray.
Submitted again with the same ``--name`` and storage path, it resumes an interrupted search.
"""

from __future__ import annotations

import sys

from mp_ray.cli import app


def main() -> None:
    """Run ``mp-ray tune`` with this script's arguments."""
    app(["tune", *sys.argv[1:]], prog_name="jobs/tune.py")


if __name__ == "__main__":
    main()

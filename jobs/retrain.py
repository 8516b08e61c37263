"""Ray job entrypoint for retraining.

    ray job submit --working-dir . -- python jobs/retrain.py --config configs/quickstart.yaml

Connects to the cluster that runs the job (``RAY_ADDRESS``), or starts a local Ray.
"""

from __future__ import annotations

import sys

from mp_ray.cli import app

if __name__ == "__main__":
    app(["retrain", *sys.argv[1:]], prog_name="jobs/retrain.py")

"""Ray job entrypoint for retraining.

    ray job submit --working-dir . -- python jobs/retrain.py --config configs/cluster.yaml

Connects to the cluster that runs the job (``RAY_ADDRESS``), or starts a local Ray.
"""

from __future__ import annotations

import sys

from mp_ray.cli import app


def main() -> None:
    """Run ``mp-ray retrain`` with this script's arguments."""
    app(["retrain", *sys.argv[1:]], prog_name="jobs/retrain.py")


if __name__ == "__main__":
    main()

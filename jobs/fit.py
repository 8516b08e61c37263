"""Ray job entrypoint for fitting the predictor.

    ray job submit --working-dir . -- python jobs/fit.py --config configs/cluster.yaml \\
        --storage-path s3://my-bucket/mp-ray/train --workers 4

Connects to the cluster that runs the job (``RAY_ADDRESS``), or starts a local Ray.
"""

from __future__ import annotations

import sys

from mp_ray.cli import app


def main() -> None:
    """Run ``mp-ray fit`` with this script's arguments."""
    app(["fit", *sys.argv[1:]], prog_name="jobs/fit.py")


if __name__ == "__main__":
    main()

"""Ray job entrypoint for fitting the predictor.

    ray job submit --working-dir . -- python jobs/fit.py --config configs/quickstart.yaml \\
        --storage-path s3://my-bucket/mp-ray/train --workers 4

Connects to the cluster that runs the job (``RAY_ADDRESS``), or starts a local Ray.
"""

from __future__ import annotations

import sys

from mp_ray.cli import app

if __name__ == "__main__":
    app(["fit", *sys.argv[1:]], prog_name="jobs/fit.py")

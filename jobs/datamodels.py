"""Ray job entrypoint for fitting datamodels on an experiment's store.

    ray job submit --working-dir . -- python jobs/datamodels.py --config configs/quickstart.yaml

Connects to the cluster that runs the job (``RAY_ADDRESS``), or starts a local Ray; the fit
itself runs as Ray tasks, one per shard of targets, each with ``datamodels.num_cpus`` /
``datamodels.num_gpus``.
"""

from __future__ import annotations

import sys

from mp_ray.cli import app


def main() -> None:
    """Run ``mp-ray datamodels`` with this script's arguments."""
    app(["datamodels", *sys.argv[1:]], prog_name="jobs/datamodels.py")


if __name__ == "__main__":
    main()

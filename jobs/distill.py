"""Ray job entrypoint for the distilled datamodel.

    ray job submit --working-dir . -- python jobs/distill.py --config configs/cluster.yaml

Runs in the job's driver (it retrains a few dozen models in one batch; no actors).
"""

from __future__ import annotations

import sys

from mp_ray.cli import app


def main() -> None:
    """Run ``mp-ray distill`` with this script's arguments."""
    app(["distill", *sys.argv[1:]], prog_name="jobs/distill.py")


if __name__ == "__main__":
    main()

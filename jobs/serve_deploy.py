"""Ray job entrypoint that deploys the mp-ray Serve application and returns once it is up.

    ray job submit --working-dir . -- python jobs/serve_deploy.py \\
        --config configs/cluster.yaml --predictor s3://my-bucket/mp-ray/predictors/digits \\
        --host 0.0.0.0 --replicas 2

Deploys the application of ``configs/serve.yaml`` (``mp_ray.serve.app:build_app``) through
``mp-ray serve --no-block`` on the cluster that runs the job; Serve keeps it running after
the job ends, and submitting again replaces it in place. Its replicas inherit the job's
``runtime_env`` (working_dir, env_vars such as ``AWS_ENDPOINT_URL``) and the cluster's
environment, where ``MP_RAY_API_KEY`` belongs: without it in the job's environment the
deployment is refused unless ``--insecure`` is passed. A predictor fitted on another
dataset or with other settings than the config is refused before anything is deployed.
On Kubernetes, a RayService (``infra/kuberay/rayservice.yaml``) does the same from Serve's
own config format.
"""

from __future__ import annotations

import sys

from mp_ray.cli import app


def main() -> None:
    """Run ``mp-ray serve --no-block`` with this script's arguments."""
    app(["serve", *sys.argv[1:], "--no-block"], prog_name="jobs/serve_deploy.py")


if __name__ == "__main__":
    main()

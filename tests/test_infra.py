"""The deployment files in infra/ agree with the package: they parse, use the pinned Ray, and
name entrypoints and configs that exist and validate (so does the README's cluster section);
the Serve config, the runtime_env and the cluster-launcher file pass Ray's own schemas; no
credential is written into them. They also keep the promises a platform team checks: every
node runs a named AMI and image, every image is pinned or pulled again, no S3 endpoint is set
by default, heads run no tasks, RayJobs are bounded in time, variants differ from their base
only by their option, and the image installs its dependencies before its code."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
import string
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mp_ray.config import load_experiment

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
KUBERAY = INFRA / "kuberay"
LAUNCHER = INFRA / "cluster-launcher" / "aws-gpu.yaml"
YAML_FILES = sorted(INFRA.rglob("*.yaml"))
TEXT_FILES = [*YAML_FILES, INFRA / "Dockerfile", INFRA / "README.md"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
RAY_PIN = next(
    re.fullmatch(r"ray\[[^\]]*\]==([\d.]+)", dep).group(1)
    for dep in PYPROJECT["project"]["dependencies"]
    if dep.startswith("ray[")
)
VERSION = PYPROJECT["project"]["version"]
BATCH_STAGES = ("retrain", "fit", "tune", "datamodels", "evaluate")
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MP_RAY_API_KEY")
# String values that hold YAML of their own.
EMBEDDED_YAML = ("serveConfigV2", "runtimeEnvYAML")
# Each variant in infra/kuberay/variants: its base manifest and the one key it adds.
VARIANTS = {
    "raycluster-auth-token.yaml": ("raycluster.yaml", ("spec", "authOptions")),
    "rayservice-gcs-ft.yaml": (
        "rayservice.yaml",
        ("spec", "rayClusterConfig", "gcsFaultToleranceOptions"),
    ),
}
# What the template aws-gpu.yaml leaves to be filled in (its header says how).
LAUNCHER_PARAMETERS = {"MP_RAY_REGION": "us-east-1", "MP_RAY_AMI": "ami-0123456789abcdef0"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _kube(kind: str, variants: bool = False) -> list[tuple[Path, dict[str, Any]]]:
    """Every KubeRay document of ``kind`` with its file: those of infra/kuberay, and with
    ``variants`` those of infra/kuberay/variants too."""
    paths = KUBERAY.rglob("*.yaml") if variants else KUBERAY.glob("*.yaml")
    return [
        (path, doc) for path in sorted(paths) for doc in _documents(path) if doc.get("kind") == kind
    ]


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every Ray custom resource shipped, variants included, with its file."""
    return [
        item
        for kind in ("RayCluster", "RayJob", "RayService")
        for item in _kube(kind, variants=True)
    ]


def _mappings(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping of nested mappings and lists, descending into the YAML held in string
    blocks (serveConfigV2, runtimeEnvYAML)."""
    if isinstance(node, dict):
        yield node
        for key, value in node.items():
            yield from _mappings(yaml.safe_load(value) if key in EMBEDDED_YAML else value)
    elif isinstance(node, list):
        for item in node:
            yield from _mappings(item)


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of nested mappings and lists (see :func:`_mappings`)."""
    for mapping in _mappings(node):
        yield from mapping.items()


def _pods(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod spec in ``doc``: head, worker groups and RayJob submitters."""
    return [mapping for mapping in _mappings(doc) if "containers" in mapping]


def _launcher() -> dict[str, Any]:
    """aws-gpu.yaml rendered as its header says, with example values."""
    template = string.Template(LAUNCHER.read_text())
    return yaml.safe_load(template.safe_substitute(LAUNCHER_PARAMETERS))


def _dockerfile() -> list[tuple[str, str]]:
    """infra/Dockerfile's instructions as (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", (INFRA / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _readme_cluster_section() -> str:
    """The README's "Running on a cluster" section (its commands name jobs and configs)."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("\n## Running on a cluster\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end >= 0 else None]


def _referenced(pattern: str) -> list[str]:
    """Sorted distinct matches of ``pattern`` over the files of infra/ and the README's
    cluster section."""
    texts = [path.read_text() for path in TEXT_FILES] + [_readme_cluster_section()]
    return sorted({match for text in texts for match in re.findall(pattern, text)})


def _serve_config() -> dict[str, Any]:
    ((_, service),) = _kube("RayService")
    return yaml.safe_load(service["spec"]["serveConfigV2"])


def _dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (from the repository root) out of the build
    context: a pattern matches it or a folder above it, from the root or, after ``**/``,
    from any depth."""
    parts = Path(path).parts
    for line in (REPO / ".dockerignore").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pattern = line.strip().removeprefix("**/")
        starts = range(len(parts)) if line.startswith("**/") else [0]
        for start in starts:
            for end in range(start + 1, len(parts) + 1):
                if fnmatch.fnmatch("/".join(parts[start:end]), pattern):
                    return True
    return False


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_file_parses(path):
    assert _documents(path), f"{path} holds no YAML document"


def test_image_and_manifests_use_the_pinned_ray():
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert re.findall(r"^FROM rayproject/ray:([\d.]+)-", dockerfile, re.MULTILINE) == [RAY_PIN]
    assert f"\nray=={RAY_PIN}\n" in (REPO / "constraints.txt").read_text()
    manifests = [doc for _, doc in _manifests()]
    ray_versions = [value for doc in manifests for key, value in _walk(doc) if key == "rayVersion"]
    assert ray_versions and set(ray_versions) == {RAY_PIN}
    assert set(_referenced(r"rayproject/ray:([\d.]+)")) == {RAY_PIN}
    # Images built from infra/Dockerfile carry the package version and a variant tag.
    images = _referenced(r"registry\.example\.com/mp-ray:(\S+)")
    assert images and set(images) == {f"{VERSION}-cpu", f"{VERSION}-gpu"}


@pytest.mark.parametrize("entrypoint", _referenced(r"\bjobs/\w+\.py"))
def test_referenced_entrypoints_exist(entrypoint):
    if entrypoint == "jobs/datamodels.py" and not (REPO / entrypoint).exists():
        pytest.skip("jobs/datamodels.py (the mp-ray datamodels job) is not in this tree yet")
    assert (REPO / entrypoint).is_file(), f"{entrypoint} is named in infra/ or README but missing"


@pytest.mark.parametrize("path", sorted((REPO / "jobs").glob("*.py")), ids=lambda p: p.name)
def test_every_job_is_a_main_over_an_mp_ray_command(path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location(f"job_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 0
    assert "--config" in capsys.readouterr().out


@pytest.mark.parametrize("config", _referenced(r"\bconfigs/[\w.-]+\.yaml"))
def test_referenced_configs_exist_and_validate(config):
    path = REPO / config
    assert path.is_file(), f"{config} is named in infra/ or README but missing"
    if path.name == "serve.yaml":
        from ray.serve.schema import ServeDeploySchema

        ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    else:
        load_experiment(path)


def test_rayservice_serves_the_package_application_of_configs_serve_yaml():
    from ray.serve.schema import ServeDeploySchema

    from mp_ray.serve import app

    schema = ServeDeploySchema.model_validate(_serve_config())
    shipped = ServeDeploySchema.model_validate(
        yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    )
    ((application,), (reference,)) = schema.applications, shipped.applications
    assert application.import_path == reference.import_path
    module, _, builder = application.import_path.partition(":")
    assert module == app.__name__ and callable(getattr(app, builder))
    deployments = {d.name: d for d in application.deployments}
    assert deployments.keys() == {d.name for d in reference.deployments}
    predictor = deployments[app.PredictorDeployment.name]
    assert predictor.user_config["predictor_uri"] == application.args["predictor"]
    load_experiment(REPO / application.args["config"])


def test_rayservice_pods_run_the_ingress_mp_ray_serve_starts():
    from mp_ray.serve.ingress import INGRESS_ENVIRONMENT

    ((_, service),) = _kube("RayService")
    cluster = service["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    for pod in pods:
        (container,) = pod["template"]["spec"]["containers"]
        env = {v["name"]: v.get("value") for v in container["env"]}
        assert INGRESS_ENVIRONMENT["haproxy"].items() <= env.items(), container["name"]


def test_raycluster_has_a_cpu_head_and_an_autoscaled_gpu_worker_group():
    ((_, cluster),) = _kube("RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    (head_container,) = head["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    gpu_groups = [
        group
        for group in spec["workerGroupSpecs"]
        if any(
            int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) > 0
            for c in group["template"]["spec"]["containers"]
        )
    ]
    assert gpu_groups, "no worker group asks for nvidia.com/gpu"


def test_worker_groups_have_consistent_autoscaling_bounds():
    groups = [
        group
        for _, doc in _manifests()
        for key, value in _walk(doc)
        if key == "workerGroupSpecs"
        for group in value
    ]
    assert groups
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group


def test_every_batch_stage_has_a_rayjob_on_the_raycluster():
    ((_, cluster),) = _kube("RayCluster")
    entrypoints = {}
    for path, job in _kube("RayJob"):
        spec = job["spec"]
        if "rayClusterSpec" in spec:
            continue  # a cluster of its own (test_a_per_job_cluster_rayjob_...)
        assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}, path
        command = spec["entrypoint"].split()
        assert command[:1] == ["python"] and command[1].startswith("jobs/"), path
        assert "--config" in command, path
        entrypoints[Path(command[1]).stem] = path
    assert set(BATCH_STAGES) <= entrypoints.keys()


def test_runtime_env_example_is_valid_and_carries_no_credentials():
    from ray.runtime_env import RuntimeEnv

    data = yaml.safe_load((INFRA / "runtime_env.yaml").read_text())
    assert set(data) <= RuntimeEnv.known_fields
    runtime_env = RuntimeEnv(**data)
    assert runtime_env.working_dir() == "."
    assert not set(runtime_env.env_vars()) & set(CREDENTIALS)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_credentials_only_come_from_secrets(path):
    for document in _documents(path):
        for key, value in _walk(document):
            assert not (key in CREDENTIALS and isinstance(value, str)), f"{key} in {path}"
            if key == "env":
                for variable in value:
                    if variable["name"] in CREDENTIALS:
                        assert "secretKeyRef" in variable["valueFrom"], variable


def test_cluster_launcher_file_passes_rays_schema():
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = _launcher()
    assert "${MP_RAY" not in yaml.safe_dump(config), "a parameter the header does not name"
    jsonschema.validate(config, schema)
    assert config["provider"]["type"] == "aws"
    assert any(node.get("min_workers", 0) >= 1 for node in config["available_node_types"].values())


def test_cluster_launcher_names_an_ami_and_an_image_for_every_node_type():
    config = _launcher()
    text = LAUNCHER.read_text()
    # The AMI is looked up per region from AWS's public parameter the header names.
    assert "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/" in text
    for name, node_type in config["available_node_types"].items():
        image_id = node_type["node_config"].get("ImageId", "")
        assert re.fullmatch(r"ami-[0-9a-f]{8,17}", image_id), f"{name} has no AMI"
    docker = config["docker"]
    for image in (docker["head_image"], docker["worker_image"]):
        assert re.fullmatch(r"\S+(@sha256:[0-9a-f]{64}|:(?!latest\b)[\w.-]+)", image), image
    assert docker["pull_before_run"] is True
    # Nodes log in to the private registry before their container is pulled.
    assert any("docker login" in command for command in config["initialization_commands"])


def test_cluster_launcher_head_keeps_rays_profile_and_workers_get_theirs():
    config = _launcher()
    head = config["available_node_types"][config["head_node_type"]]
    # No IamInstanceProfile: Ray gives the head ray-autoscaler-v1, which launches workers.
    assert "IamInstanceProfile" not in head["node_config"]
    workers = [
        node_type
        for name, node_type in config["available_node_types"].items()
        if name != config["head_node_type"]
    ]
    assert workers
    for worker in workers:
        assert worker["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::")


def test_no_s3_endpoint_is_set_by_default():
    """AWS S3 unless the user opts in: no runtime_env, manifest, launcher or Serve config sets
    AWS_ENDPOINT_URL; pods read it only from an optional ConfigMap."""
    runtime_env = yaml.safe_load((INFRA / "runtime_env.yaml").read_text())
    assert "AWS_ENDPOINT_URL" not in runtime_env.get("env_vars", {})
    documents = [doc for path in YAML_FILES for doc in _documents(path)]
    documents.append(yaml.safe_load((REPO / "configs" / "serve.yaml").read_text()))
    for document in documents:
        for key, value in _walk(document):
            assert key != "AWS_ENDPOINT_URL", f"AWS_ENDPOINT_URL: {value}"
            if key == "env":
                for variable in value:
                    if variable["name"] == "AWS_ENDPOINT_URL":
                        assert variable["valueFrom"]["configMapKeyRef"]["optional"] is True
    for config in _referenced(r"\bconfigs/[\w.-]+\.yaml"):
        if Path(config).name != "serve.yaml":
            storage_options = load_experiment(REPO / config).store.storage_options
            assert "endpoint_url" not in storage_options, config


def test_ray_pods_can_take_the_s3_endpoint_from_an_optional_configmap():
    for path, doc in _manifests():
        submitter = doc["spec"].get("submitterPodTemplate", {}).get("spec")
        for pod in _pods(doc):
            if pod is submitter:
                continue  # `ray job submit` talks to the dashboard, not to S3
            for container in pod["containers"]:
                names = [variable["name"] for variable in container.get("env", [])]
                assert "AWS_ENDPOINT_URL" in names, f"{path}: {container['name']}"


def test_every_head_runs_no_tasks():
    heads = [
        (path, value)
        for path, doc in _manifests()
        for key, value in _walk(doc)
        if key == "headGroupSpec"
    ]
    # raycluster, its auth variant, rayservice, its GCS FT variant, the per-job RayJob
    assert len(heads) >= 5
    for path, head in heads:
        assert head["rayStartParams"].get("num-cpus") == "0", path


def test_every_image_is_pinned_or_pulled_always():
    containers = 0
    for path, doc in _manifests():
        for pod in _pods(doc):
            assert pod.get("imagePullSecrets"), f"{path}: a pod without the registry's Secret"
            for container in pod["containers"]:
                containers += 1
                image = container["image"]
                pinned = "@sha256:" in image
                assert pinned or container.get("imagePullPolicy") == "Always", (path, image)
                assert pinned or not image.endswith(":latest"), (path, image)
        for key, value in _walk(doc):
            if key == "autoscalerOptions":
                # The autoscaler sidecar runs the head's image; pull it again like the head.
                assert value.get("imagePullPolicy") == "Always", path
    assert containers


def test_every_rayjob_has_a_deadline():
    jobs = _kube("RayJob", variants=True)
    assert jobs
    for path, job in jobs:
        deadline = job["spec"].get("activeDeadlineSeconds")
        assert isinstance(deadline, int) and deadline > 0, path


def test_a_per_job_cluster_rayjob_shuts_its_cluster_down():
    ((_, cluster),) = _kube("RayCluster")
    own = [(path, job) for path, job in _kube("RayJob") if "rayClusterSpec" in job["spec"]]
    assert own, "no RayJob starts a cluster of its own"
    for path, job in own:
        spec = job["spec"]
        assert "clusterSelector" not in spec, path
        assert spec["shutdownAfterJobFinishes"] is True, path
        assert isinstance(spec["ttlSecondsAfterFinished"], int), path
        assert spec["rayClusterSpec"] == cluster["spec"], f"{path} drifted from raycluster.yaml"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_variant_differs_from_its_base_only_by_its_option(variant):
    base, option = VARIANTS[variant]
    (document,) = _documents(KUBERAY / "variants" / variant)
    (reference,) = _documents(KUBERAY / base)
    parent = document
    for key in option[:-1]:
        parent = parent[key]
    assert parent.pop(option[-1]), f"{variant} lacks {'.'.join(option)}"
    assert document == reference


def test_every_variant_file_is_described():
    assert {path.name for path in (KUBERAY / "variants").glob("*.yaml")} == VARIANTS.keys()


def test_variants_take_their_secrets_from_secrets():
    (auth,) = _documents(KUBERAY / "variants" / "raycluster-auth-token.yaml")
    assert auth["spec"]["authOptions"]["mode"] == "token"
    assert auth["spec"]["authOptions"]["secretName"]
    (service,) = _documents(KUBERAY / "variants" / "rayservice-gcs-ft.yaml")
    options = service["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert options["redisAddress"]
    assert "secretKeyRef" in options["redisPassword"]["valueFrom"]


def test_datamodels_rayjob_gets_the_gpu_it_asks_for():
    ((path, job),) = [
        (path, job)
        for path, job in _kube("RayJob")
        if "jobs/datamodels.py" in job["spec"]["entrypoint"]
    ]
    command = shlex.split(job["spec"]["entrypoint"])
    config = load_experiment(REPO / command[command.index("--config") + 1])
    promises_gpu = "GPU" in path.read_text().split("apiVersion:")[0]
    assert promises_gpu == (config.datamodels.num_gpus > 0)


def test_dockerfile_installs_dependencies_before_copying_the_code():
    instructions = _dockerfile()
    installs = [
        i for i, (op, args) in enumerate(instructions) if op == "RUN" and "pip install" in args
    ]
    code_copies = [
        i for i, (op, args) in enumerate(instructions) if op == "COPY" and "mp_ray" in args
    ]
    assert len(installs) == 2 and len(code_copies) == 1
    dependencies, package = installs
    assert dependencies < code_copies[0] < package
    assert "--no-deps" not in instructions[dependencies][1]
    assert "--no-deps" in instructions[package][1]
    # Before the dependency layer only what names the dependencies is copied.
    copied = [args.split()[1:-1] for op, args in instructions[:dependencies] if op == "COPY"]
    assert copied == [["pyproject.toml", "constraints.txt"]]


def test_dockerfile_runs_as_a_user_that_owns_its_workdir():
    instructions = _dockerfile()
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    (workdir,) = [args for op, args in instructions if op == "WORKDIR"]
    chown = f"chown {users[-1]}:"
    assert any(op == "RUN" and chown in args and workdir in args for op, args in instructions)
    for op, args in instructions:
        if op == "COPY":
            assert args.startswith(f"--chown={users[-1]}:"), args


@pytest.mark.parametrize(
    "path",
    [
        "runs/quickstart/store.zarr/zarr.json",
        ".venv/bin/python",
        ".git/HEAD",
        "benchmarks/results/scale.json",
        "mp_ray/__pycache__/config.cpython-311.pyc",
        "results/summary.json",
    ],
)
def test_dockerignore_keeps_local_files_out_of_the_build_context(path):
    assert _dockerignored(path)


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "constraints.txt", "README.md", "mp_ray/config.py", "jobs/fit.py"]
)
def test_dockerignore_keeps_what_the_image_copies(path):
    assert not _dockerignored(path)

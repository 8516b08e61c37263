"""The deployment files in infra/ agree with the package: they parse, use the pinned Ray, and
name entrypoints and configs that exist and validate (so does the README's cluster section);
the Serve config, the runtime_env and the cluster-launcher file pass Ray's own schemas; no
credential is written into them."""

from __future__ import annotations

import importlib.util
import json
import re
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


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _kube(kind: str) -> list[tuple[Path, dict[str, Any]]]:
    """Every KubeRay document of ``kind`` with its file."""
    return [
        (path, doc)
        for path in sorted((INFRA / "kuberay").glob("*.yaml"))
        for doc in _documents(path)
        if doc.get("kind") == kind
    ]


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of nested mappings and lists, descending into the YAML held
    in string blocks (serveConfigV2, runtimeEnvYAML)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            if key in ("serveConfigV2", "runtimeEnvYAML"):
                yield from _walk(yaml.safe_load(value))
            else:
                yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


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


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_file_parses(path):
    assert _documents(path), f"{path} holds no YAML document"


def test_image_and_manifests_use_the_pinned_ray():
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert re.findall(r"^FROM rayproject/ray:([\d.]+)-", dockerfile, re.MULTILINE) == [RAY_PIN]
    assert f"\nray=={RAY_PIN}\n" in (REPO / "constraints.txt").read_text()
    manifests = [doc for _, doc in _kube("RayCluster") + _kube("RayService")]
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
        for _, doc in _kube("RayCluster") + _kube("RayService")
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
    config = yaml.safe_load((INFRA / "cluster-launcher" / "aws-gpu.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["provider"]["type"] == "aws"
    assert any(node.get("min_workers", 0) >= 1 for node in config["available_node_types"].values())

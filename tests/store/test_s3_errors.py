"""S3 failures over the command line, against real moto servers: one line naming the cause
and the object, exit status 2, no traceback, within seconds, and nothing written changed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from ports import free_port
from refusals import refused_output
from typer.testing import CliRunner

from mp_ray.cli import app
from mp_ray.config import DatasetConfig, load_experiment
from mp_ray.data import load_dataset
from mp_ray.errors import StorageError
from mp_ray.predictor.model import SetFunction
from mp_ray.predictor.predictor import Predictor, PredictorMeta
from mp_ray.predictor.scaling import TargetScaler
from mp_ray.retrain import prepare_store

pytestmark = pytest.mark.s3
QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
runner = CliRunner()
FAIL_WITHIN_S = 5


def write_config(tmp_path: Path, store: dict, dataset: dict | None = None) -> Path:
    """The quickstart experiment with another store (and dataset); returns its path."""
    config = yaml.safe_load(QUICKSTART.read_text())
    config["store"] = {"n_rows": 500, "block_rows": 250, **store}
    if dataset:
        config["dataset"] = dataset
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def assert_one_line_error(exit_code: int, output: str, *names: str) -> None:
    """A refusal (see :mod:`refusals`) whose whole output is short."""
    refused_output(exit_code, output, *names)
    assert len(output.strip().splitlines()) < 5, output


def invoke(*args: str) -> tuple[int, str]:
    """Exit status and output of ``mp-ray ARGS``, asserted to end within FAIL_WITHIN_S."""
    start = time.perf_counter()
    result = runner.invoke(app, list(args))
    seconds = time.perf_counter() - start
    assert seconds < FAIL_WITHIN_S, f"mp-ray {' '.join(args)} took {seconds:.1f} s: {result.output}"
    return result.exit_code, result.output


def refused_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_refused_endpoint_is_named(tmp_path, s3_bucket):
    endpoint = refused_endpoint()
    code, output = invoke("inspect", f"s3://{s3_bucket}/x.zarr", "--endpoint-url", endpoint)
    assert_one_line_error(code, output, f"cannot reach the S3 endpoint {endpoint}")
    assert "connection refused" in output

    store = {"uri": f"s3://{s3_bucket}/x.zarr", "storage_options": {"endpoint_url": endpoint}}
    code, output = invoke("retrain", "-c", str(write_config(tmp_path, store)))
    assert_one_line_error(code, output, endpoint, f"s3://{s3_bucket}/x.zarr")

    dataset = {
        "source": "file",
        "path": f"s3://{s3_bucket}/d.parquet",
        "storage_options": {"endpoint_url": endpoint},
    }
    config = write_config(tmp_path, {"uri": str(tmp_path / "x.zarr")}, dataset)
    code, output = invoke("retrain", "-c", str(config))
    assert_one_line_error(code, output, endpoint, f"s3://{s3_bucket}/d.parquet")
    assert not (tmp_path / "x.zarr").exists()


def test_missing_bucket_is_named_and_not_created(tmp_path, s3_server):
    bucket = "mpr-no-such-bucket"
    code, output = invoke(
        "inspect", f"s3://{bucket}/x.zarr", "--endpoint-url", s3_server["endpoint_url"]
    )
    assert_one_line_error(code, output, f"S3 bucket '{bucket}' does not exist")

    store = {"uri": f"s3://{bucket}/x.zarr", "storage_options": s3_server}
    code, output = invoke("retrain", "-c", str(write_config(tmp_path, store)))
    assert_one_line_error(code, output, f"S3 bucket '{bucket}' does not exist")

    dataset = {"source": "file", "path": f"s3://{bucket}/d.csv", "storage_options": s3_server}
    config = write_config(tmp_path, {"uri": str(tmp_path / "x.zarr")}, dataset)
    code, output = invoke("retrain", "-c", str(config))
    assert_one_line_error(code, output, f"S3 bucket '{bucket}' does not exist")

    client = boto3.client("s3", region_name="us-east-1", **s3_server)
    assert bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}


def without_credentials(tmp_path: Path) -> dict[str, str]:
    """Environment variables under which botocore finds no AWS credentials."""
    none = str(tmp_path / "none")
    return {
        "AWS_SHARED_CREDENTIALS_FILE": none,
        "AWS_CONFIG_FILE": none,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def test_missing_credentials_are_named(tmp_path, monkeypatch, s3_server, s3_bucket):
    uri = f"s3://{s3_bucket}/x.zarr"
    # As a user runs it: a process whose environment holds no credentials.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    args = ["inspect", uri, "--endpoint-url", s3_server["endpoint_url"]]
    done = subprocess.run(
        [sys.executable, "-m", "mp_ray.cli", *args],
        env={**env, **without_credentials(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert_one_line_error(done.returncode, output, f"no AWS credentials found for {uri}")
    assert "AWS_ACCESS_KEY_ID" in output

    # In this process, timed: retrain with the store on S3.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    for name, value in without_credentials(tmp_path).items():
        monkeypatch.setenv(name, value)
    config = write_config(tmp_path, {"uri": uri, "storage_options": s3_server})
    code, output = invoke("retrain", "-c", str(config))
    assert_one_line_error(code, output, f"no AWS credentials found for {uri}")


@pytest.fixture
def locked_server() -> Iterator[str]:
    """A moto server of its own (its auth switch is process-wide) whose access control can be
    turned on with :func:`set_auth`; yields its endpoint."""
    port = free_port()
    server = subprocess.Popen(
        [Path(sys.executable).parent / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except OSError:
            assert time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.1)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


def set_auth(endpoint: str, on: bool) -> None:
    """Turn the server's access control on (unknown credentials are denied) or off."""
    body = b"0" if on else b"inf"
    headers = {"Content-Type": "text/plain"}  # not a form, so the server reads the body
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset-auth", body, headers))


def object_hashes(client, bucket: str) -> dict[str, str]:
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        item["Key"]: hashlib.sha256(
            client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        ).hexdigest()
        for item in listing
    }


def user_options(endpoint: str, name: str, actions: list[str], resources: list[str]) -> dict:
    """Storage options with the keys of a new user allowed ``actions`` on ``resources``."""
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=endpoint)
    iam.create_user(UserName=name)
    allow = {"Effect": "Allow", "Action": actions, "Resource": resources}
    policy = json.dumps({"Version": "2012-10-17", "Statement": [allow]})
    iam.put_user_policy(UserName=name, PolicyName="allow", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"endpoint_url": endpoint, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


def test_access_denied_names_the_object_and_changes_nothing(tmp_path, locked_server):
    options = {"endpoint_url": locked_server}
    client = boto3.client("s3", region_name="us-east-1", **options)
    client.create_bucket(Bucket="locked")
    uri = "s3://locked/x.zarr"
    config = write_config(tmp_path, {"uri": uri, "storage_options": options})
    prepare_store(load_experiment(config))
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    pq.write_table(pa.table({"x": rng.normal(size=60), "label": np.tile([0, 1], 30)}), buffer)
    client.put_object(Bucket="locked", Key="data/d.parquet", Body=buffer.getvalue())
    before = object_hashes(client, "locked")
    # moto checks a bucket's HEAD as s3:HeadBucket (AWS as s3:ListBucket)
    read = ["s3:ListBucket", "s3:HeadBucket", "s3:GetObject"]
    reader = user_options(locked_server, "reader", read, ["arn:aws:s3:::locked*"])
    fetcher = user_options(
        locked_server, "fetcher", ["s3:GetObject"], ["arn:aws:s3:::locked/data/*"]
    )

    set_auth(locked_server, on=True)
    try:
        # Unknown keys: the bucket refuses them.
        for args in (
            ["inspect", uri, "--endpoint-url", locked_server],
            ["retrain", "-c", str(config)],
        ):
            code, output = invoke(*args)
            assert_one_line_error(code, output, "access denied to S3 bucket 'locked'", uri)
        # A reader may open the bucket but not declare a new store in it.
        new = "s3://locked/new.zarr"
        config = write_config(tmp_path, {"uri": new, "storage_options": reader})
        code, output = invoke("retrain", "-c", str(config))
        assert_one_line_error(code, output, f"access denied to {new} (PutObject)")
        # A data file needs the right to read it, none on its bucket.
        data = DatasetConfig(source="file", path="s3://locked/data/d.parquet")
        assert load_dataset(data.model_copy(update={"storage_options": fetcher})).n_train
        with pytest.raises(StorageError, match=r"access denied to s3://locked/data/d\.parquet"):
            load_dataset(data.model_copy(update={"storage_options": options}))
    finally:
        set_auth(locked_server, on=False)
    assert object_hashes(client, "locked") == before


def test_predictor_checkpoints_name_the_bucket_and_create_none(s3_server):
    """Checkpoint saves and loads share the bucket check: a missing bucket is named, not made."""
    scaler = TargetScaler.fit(np.arange(6.0).reshape(2, 3))
    meta = PredictorMeta(8, 3, 2, scaler, {}, "fingerprint", "memory://none")
    predictor = Predictor(SetFunction(4, 3, 8), torch.zeros(5, 4), meta)
    uri = "s3://mpr-no-such-bucket/predictor"
    with pytest.raises(StorageError, match="S3 bucket 'mpr-no-such-bucket' does not exist"):
        predictor.save(uri, s3_server)
    with pytest.raises(StorageError, match="S3 bucket 'mpr-no-such-bucket' does not exist"):
        Predictor.load(uri, s3_server)
    client = boto3.client("s3", region_name="us-east-1", **s3_server)
    assert "mpr-no-such-bucket" not in {b["Name"] for b in client.list_buckets()["Buckets"]}
    endpoint = refused_endpoint()
    with pytest.raises(StorageError, match=f"cannot reach the S3 endpoint {endpoint}"):
        Predictor.load(uri, {"endpoint_url": endpoint})

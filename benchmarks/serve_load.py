"""Load test of the model-prediction endpoint, with and without ``@serve.batch``.

Starts the Serve application on this machine's Ray (loopback only), then for each of
``--clients`` concurrency levels runs that many closed-loop clients, each sending
``POST /v1/predict`` back to back for ``--seconds`` seconds (or ``--max-requests``):
async httpx clients with a random subset per request (reproducible from the request
number), or ``wrk`` (``--client wrk``: one C thread, far less CPU taken from the 2 cores
the server runs on, one subset's body). Reports p50 / p99 latency and throughput per
level, batched and unbatched, and beside them Serve's own floor on this machine: a
one-replica FastAPI ingress that parses the same body and answers a constant (no model,
no second hop). ``--ingress`` picks the embedded Ray's ingress as ``mp-ray serve`` does
(:mod:`mp_ray.serve.ingress`): ``haproxy``, Ray's high-throughput mode (HAProxy in front of
the ingress replicas' own ports, gRPC between deployments), or Serve's Python ``proxy``.

    .venv/bin/python benchmarks/serve_load.py [--config configs/quickstart.yaml]
        [--predictor runs/predictors/quickstart] [--clients 1 16 64] [--seconds 10]
        [--ingress haproxy|proxy] [--client httpx|wrk]

(``make demo`` exports the default predictor.) Writes
``serve_load_<ingress>_<client>.{json,md,png}``.
"""

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, get_args

import matplotlib

matplotlib.use("Agg")
import httpx
import matplotlib.pyplot as plt
import numpy as np
import ray
from fastapi import FastAPI, Request

from mp_ray.config import load_experiment
from mp_ray.data import load_dataset
from mp_ray.ray_session import apply_ray_env_defaults
from mp_ray.serve.ingress import Ingress, use_ingress

VARIANTS = {
    "batched": "mp-ray, @serve.batch",
    "unbatched": "mp-ray, unbatched",
    "floor": "Serve floor (constant answer)",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request_body(k: int, n: int) -> dict[str, Any]:
    """Request k's subset: a uniform random size, then uniform indices."""
    rng = np.random.default_rng([7, k])
    size = int(rng.integers(1, n + 1))
    return {"indices": np.sort(rng.choice(n, size, replace=False)).tolist()}


async def load(base: str, clients: int, seconds: float, max_requests: int, n: int) -> dict:
    """``clients`` concurrent closed-loop clients; latencies of the successful requests."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(max_requests))
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal failures
            for k in counter:
                if time.perf_counter() > deadline:
                    return
                start = time.perf_counter()
                response = await client.post("/v1/predict", json=request_body(k, n))
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    failures += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    if not latencies:
        raise RuntimeError(f"all {failures} requests to {base} failed")
    values = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "failures": failures,
        "seconds": elapsed,
        "throughput_rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
    }


def floor_application() -> Any:
    """Serve's own floor: an ingress that parses the same request body and answers a
    constant, with no model and no second hop. (Built here, not at import: Serve is imported
    only once the ingress is chosen. This module keeps real annotations, no ``from
    __future__ import annotations``: FastAPI reads the handler's ``Request`` annotation.)"""
    from ray import serve

    floor_api = FastAPI()

    @serve.deployment(max_ongoing_requests=256)
    @serve.ingress(floor_api)
    class Floor:
        @floor_api.post("/v1/predict")
        async def predict(self, request: Request) -> dict[str, Any]:
            return {"size": len((await request.json())["indices"])}

    return Floor.bind()


def wrk_load(base: str, clients: int, seconds: float, n: int) -> dict[str, Any]:
    """The same closed loop driven by ``wrk`` (C, one thread; far less client CPU than
    Python on the 2 cores the server shares), posting request 1's body every time."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [[{json.dumps(request_body(1, n))}]]\n"
        )
    command = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:.0f}s", "--latency", "-s", script.name]
    out = subprocess.run([*command, f"{base}/v1/predict"], capture_output=True, text=True).stdout
    os.unlink(script.name)

    def milliseconds(label: str) -> float:
        value = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if value is None:
            raise RuntimeError(f"wrk printed no {label} latency:\n{out}")
        return float(value[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[value[2]]

    total = int(re.search(r"(\d+) requests in", out)[1])
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    failures = (int(failed[1]) if failed else 0) + (
        sum(int(x) for x in re.findall(r"\d+", errors[1])) if errors else 0
    )
    return {
        "clients": clients,
        "requests": total - failures,
        "failures": failures,
        "seconds": seconds,
        "throughput_rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "p50_ms": milliseconds("50%"),
        "p99_ms": milliseconds("99%"),
    }


def measure(base: str, args: argparse.Namespace, n: int, variant: str) -> list[dict[str, Any]]:
    """Every concurrency level against the application now deployed."""
    httpx.post(f"{base}/v1/predict", json=request_body(0, n), timeout=60)  # warm-up
    rows = []
    for clients in args.clients:
        if args.client == "wrk":
            row = wrk_load(base, clients, args.seconds, n)
        else:
            row = asyncio.run(load(base, clients, args.seconds, args.max_requests, n))
        row["variant"] = variant
        rows.append(row)
        print(
            f"{variant:<10} clients={clients:>3}: {row['throughput_rps']:7.1f} "
            f"req/s, p50 {row['p50_ms']:7.1f} ms, p99 {row['p99_ms']:7.1f} ms, "
            f"{row['failures']} failed"
        )
    return rows


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from ray import serve

    from mp_ray.serve.app import build_app

    n = load_dataset(load_experiment(args.config).dataset).n_train
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    rows = []
    for variant in VARIANTS:
        if variant == "floor":
            application = floor_application()
        else:
            batching = variant == "batched"
            application = build_app(  # loopback only: open endpoints on purpose
                {
                    "config": str(args.config),
                    "predictor": args.predictor,
                    "batching": batching,
                    "insecure": True,
                }
            )
        serve.run(application, name="mp-ray", route_prefix="/", blocking=False)
        rows += measure(base, args, n, variant)
        serve.delete("mp-ray")
    serve.shutdown()
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| deployment | clients | requests | throughput (req/s) | p50 (ms) | p99 (ms) | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {VARIANTS[r['variant']]} | {r['clients']} | {r['requests']:,} "
            f"| {r['throughput_rps']:,.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['failures']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for variant, label in VARIANTS.items():
        mine = [r for r in rows if r["variant"] == variant]
        clients = [r["clients"] for r in mine]
        axes[0].plot(clients, [r["throughput_rps"] for r in mine], marker="o", label=label)
        axes[1].plot(clients, [r["p99_ms"] for r in mine], marker="o", label=f"{label} p99")
        axes[1].plot(
            clients, [r["p50_ms"] for r in mine], marker="x", ls="--", label=f"{label} p50"
        )
    axes[0].set_ylabel("requests / s")
    axes[1].set_ylabel("latency (ms)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.legend(fontsize=8)
    fig.suptitle("POST /v1/predict on this machine")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/quickstart.yaml"))
    parser.add_argument("--predictor", default="runs/predictors/quickstart")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--ingress",
        choices=get_args(Ingress),
        default="haproxy",
        help="the embedded Ray's HTTP ingress, as for mp-ray serve",
    )
    parser.add_argument(
        "--client", choices=("httpx", "wrk"), default="httpx", help="the load generator"
    )
    args = parser.parse_args()
    args.config = args.config.absolute()
    if args.client == "wrk" and shutil.which("wrk") is None:
        parser.error("--client wrk needs the wrk binary on PATH (Debian: apt-get install wrk)")
    use_ingress(args.ingress)  # before Serve is imported, here and in the Ray it starts
    apply_ray_env_defaults()
    ray.init(address="local", include_dashboard=False)
    rows = run(args)
    meta = {
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "ray": ray.__version__,
        "seconds_per_level": args.seconds,
        "ingress": args.ingress,
        "client": args.client,
    }
    ray.shutdown()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"serve_load_{args.ingress}_{args.client}"
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = markdown(rows)
    (args.out / f"{stem}.md").write_text(table + "\n")
    plot(rows, args.out / f"{stem}.png")
    print(table)
    for clients in args.clients:
        on, off, floor = (
            next(r for r in rows if r["clients"] == clients and r["variant"] == v) for v in VARIANTS
        )
        print(
            f"{clients} clients: batching gives {on['throughput_rps'] / off['throughput_rps']:.2f}"
            f"× the unbatched throughput, {on['throughput_rps'] / floor['throughput_rps']:.2f}× "
            "the floor's"
        )


if __name__ == "__main__":
    main()

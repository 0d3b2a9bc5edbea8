"""gRPC next to REST on the same server and the same load driver: the Open Inference Protocol both ways.

    .venv/bin/python bench/grpc_bench.py                       # about 3 minutes
    .venv/bin/python bench/grpc_bench.py --connections 1,8 --duration 4 --repeat 3 --scenarios v2bin1024

One service (2 gevent workers, GRPC_PORT set) answers both protocols. The load driver is the same for
both: one closed-loop client process per connection, sending a pre-built request (REST: ``http.client``
on a kept-alive connection; gRPC: grpcio with a pre-serialized message, no protobuf work in the client)
and reading the whole answer. wrk cannot speak gRPC, so bench.py's wrk figures are not comparable with
these. Scenarios, run alternately REST / gRPC ``--repeat`` times per cell (medians shown):

* ``v2bin1024``: V2 inference of 1024 FP32 rows [1024, 784]: REST with the binary tensor extension,
  gRPC with ``raw_input_contents``.
* ``png1``: one 28x28 PNG: REST ``POST /predict`` (image/png body), gRPC ModelInfer with a BYTES ``image``.
* ``fp32x1`` (gRPC only): one FP32 row [1, 784], the smallest inference call.

Then the time to ready with and without GRPC_PORT (alternating starts). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench import cpu_seconds, png, server_pids, v2_binary  # noqa: E402
from bench.server import MODELS, GunicornServer, free_port, mnist_test_set  # noqa: E402
from service.contract import FEATURES, IMAGE_INPUT_NAME, INPUT_NAME  # noqa: E402

METHOD = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class Call:
    """One pre-built request: REST (``path`` + headers) or gRPC (``path`` = the method)."""

    protocol: str
    path: str
    body: bytes
    items: int
    headers: dict[str, str] | None = None


def grpc_request(name: str, datatype: str, shape: list[int], raw: bytes) -> bytes:
    """A serialized ModelInferRequest, built with the service's own generated messages."""
    from service.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request.SerializeToString()


def scenarios() -> dict[str, list[Call]]:
    images, _ = mnist_test_set()
    x = images[:1024].reshape(1024, FEATURES).astype("<f4") / np.float32(255)
    v2_body, v2_header = v2_binary(x)
    one_png = png(images[0])
    return {
        "v2bin1024": [
            Call("rest", "/v2/models/mnist/infer", v2_body, 1024, {
                "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(v2_header)}),
            Call("grpc", METHOD, grpc_request(INPUT_NAME, "FP32", [1024, FEATURES], x.tobytes()), 1024),
        ],
        "png1": [
            Call("rest", "/predict", one_png, 1, {"Content-Type": "image/png"}),
            Call("grpc", METHOD, grpc_request(IMAGE_INPUT_NAME, "BYTES", [1],
                                              len(one_png).to_bytes(4, "little") + one_png), 1),
        ],
        "fp32x1": [Call("grpc", METHOD, grpc_request(INPUT_NAME, "FP32", [1, FEATURES], x[:1].tobytes()), 1)],
    }


def client(call: Call, http_port: int, grpc_target: str, barrier, duration: float, results) -> None:
    """One connection's closed loop: latencies (s) of the calls that started within the window, which
    opens when every client has connected and warmed up (``barrier``)."""
    if call.protocol == "grpc":
        import grpc

        channel = grpc.insecure_channel(grpc_target, options=[("grpc.max_send_message_length", -1),
                                                              ("grpc.max_receive_message_length", -1)])
        stub = channel.unary_unary(call.path)  # bytes in, bytes out

        def once() -> None:
            stub(call.body, timeout=30)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)

        def once() -> None:
            try:
                conn.request("POST", call.path, body=call.body, headers=call.headers)
                response = conn.getresponse()
                response.read()
            except Exception:
                conn.close()  # the next request reconnects (a half-sent request poisons the connection)
                raise
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")

    once()  # warm up outside the window
    if call.protocol == "rest":
        # The others may take longer to start than gunicorn keeps an idle connection (keepalive, 5 s).
        conn.close()
    latencies, errors, first_error = [], 0, ""
    barrier.wait()
    end = time.time() + duration
    while time.time() < end:
        began = time.perf_counter()
        try:
            once()
            latencies.append(time.perf_counter() - began)
        except Exception as exc:  # noqa: BLE001 - counted and shown
            errors += 1
            first_error = first_error or repr(exc)[:120]
    results.put((latencies, errors, first_error))


def run_cell(server: GunicornServer, grpc_target: str, call: Call, connections: int, duration: float) -> dict:
    ctx = multiprocessing.get_context("spawn")  # clients import grpcio themselves, never across a fork
    results, barrier = ctx.Queue(), ctx.Barrier(connections + 1)
    procs = [ctx.Process(target=client, args=(call, server.port, grpc_target, barrier, duration, results))
             for _ in range(connections)]
    for proc in procs:
        proc.start()
    pids = server_pids(server)
    barrier.wait(timeout=120)
    cpu_before = cpu_seconds(pids)
    gathered = [results.get(timeout=duration + 120) for _ in procs]
    cpu = cpu_seconds(pids) - cpu_before
    for proc in procs:
        proc.join()
    latencies = sorted(lat for lats, _, _ in gathered for lat in lats)
    count = len(latencies)
    return {
        "rps": count / duration,
        "images": count * call.items / duration,
        "p50": latencies[count // 2] * 1000 if count else float("nan"),
        "p99": latencies[min(count - 1, int(count * 0.99))] * 1000 if count else float("nan"),
        "cpu_us": cpu / max(1, count) * 1e6,
        "errors": sum(errors for _, errors, _ in gathered),
        "first_error": next((error for _, _, error in gathered if error), ""),
    }


def median_cell(runs: list[dict]) -> dict:
    merged = {key: statistics.median(run[key] for run in runs) for key in ("rps", "images", "p50", "p99", "cpu_us")}
    merged["errors"] = sum(run["errors"] for run in runs)
    merged["first_error"] = next((run["first_error"] for run in runs if run["first_error"]), "")
    return merged


def start(env: dict[str, str]) -> GunicornServer:
    return GunicornServer(MODELS, env=env, workers=2).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell, alternating REST and gRPC")
    parser.add_argument("--connections", default="1,8")
    parser.add_argument("--scenarios", default="", help="comma list; default all")
    parser.add_argument("--ready-starts", type=int, default=3, help="starts with and without gRPC to time")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server (WORKER_CLASS=gthread)")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.env)
    conns = [int(c) for c in args.connections.split(",")]
    cells = {name: calls for name, calls in scenarios().items()
             if not args.scenarios or name in args.scenarios.split(",")}

    grpc_port = free_port()
    env = {**settings, "GRPC_PORT": str(grpc_port)}
    server = start(env)
    target = f"127.0.0.1:{grpc_port}"
    results: dict[tuple[str, str, int], dict] = {}
    try:
        for name, calls in cells.items():
            for c in conns:
                runs: dict[str, list[dict]] = {call.protocol: [] for call in calls}
                for _ in range(args.repeat):
                    for call in calls:
                        runs[call.protocol].append(run_cell(server, target, call, c, args.duration))
                for protocol, measured in runs.items():
                    results[(name, protocol, c)] = median_cell(measured)
    finally:
        server.stop()

    ready: dict[str, list[float]] = {"without gRPC": [], "with GRPC_PORT": []}
    for _ in range(args.ready_starts):
        with_grpc = {**settings, "GRPC_PORT": str(free_port())}
        for label, start_env in (("without gRPC", settings), ("with GRPC_PORT", with_grpc)):
            started = start(start_env)
            started.stop()
            ready[label].append(started.ready_seconds)

    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores (shared; load average "
          f"{os.getloadavg()[0]:.1f} at the end), {platform.python_implementation()} {platform.python_version()}; "
          f"settings: {settings or 'defaults'}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print("| scenario | protocol | conns | req/s | images/s | p50 ms | p99 ms | server CPU µs/req | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, protocol, c), r in results.items():
        print(f"| {name} | {protocol} | {c} | {r['rps']:,.0f} | {r['images']:,.0f} | {r['p50']:.2f} | "
              f"{r['p99']:.2f} | {r['cpu_us']:,.0f} | {r['errors']} {r['first_error']} |")
    for label, seconds in ready.items() if args.ready_starts else ():
        print(f"\nready {label}: median {statistics.median(seconds):.2f} s ({', '.join(f'{s:.2f}' for s in seconds)})",
              end="")
    print()


if __name__ == "__main__":
    main()

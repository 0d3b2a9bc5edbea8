"""Why service/grpc/server.py calls ``grpc.experimental.gevent.init_gevent()`` under the gevent worker.

    .venv/bin/python bench/grpc_gevent.py plain     # monkey-patched, no init_gevent: the process hangs
    .venv/bin/python bench/grpc_gevent.py gevent    # monkey-patched + init_gevent (what the service does)
    .venv/bin/python bench/grpc_gevent.py none      # not patched (gthread/sync workers)

Starts a grpcio server with a trivial ServerLive in this process (patched like gunicorn.conf.py patches),
measures a 10 ms heartbeat greenlet's rate while gRPC idles (is the hub still running?), then ServerLive
calls per second from a client in another process. Prints figures; a hang is the answer for ``plain``
(run it under ``timeout``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

MODE = sys.argv[1] if len(sys.argv) > 1 else "gevent"
if MODE != "none":
    from gevent import monkey

    monkey.patch_all()

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from concurrent import futures  # noqa: E402

import grpc  # noqa: E402

if MODE == "gevent":
    from grpc.experimental import gevent as grpc_gevent

    grpc_gevent.init_gevent()

from service.grpc import grpc_predict_v2_pb2 as pb  # noqa: E402

CLIENT = """
import grpc, sys, time
call = grpc.insecure_channel(sys.argv[1]).unary_unary('/inference.GRPCInferenceService/ServerLive')
call(b'', timeout=10)
start, n = time.perf_counter(), 500
for _ in range(n):
    call(b'', timeout=10)
print(round(n / (time.perf_counter() - start)))
"""


def main() -> None:
    def live(request, context):
        return pb.ServerLiveResponse(live=True)

    handler = grpc.unary_unary_rpc_method_handler(live, request_deserializer=pb.ServerLiveRequest.FromString,
                                                  response_serializer=pb.ServerLiveResponse.SerializeToString)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[
        grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ServerLive": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    if MODE != "none":
        import gevent

        beats = []

        def heartbeat() -> None:
            while True:
                gevent.sleep(0.01)
                beats.append(time.perf_counter())

        gevent.spawn(heartbeat)
        gevent.sleep(1.0)
        print(f"{MODE}: heartbeat (every 10 ms) ran {len(beats)} times in 1 s while gRPC idled", flush=True)
    out = subprocess.run([sys.executable, "-c", CLIENT, f"127.0.0.1:{port}"], capture_output=True, text=True,
                         timeout=120)
    print(f"{MODE}: ServerLive, one client: {out.stdout.strip() or out.stderr[-300:]} calls/s", flush=True)
    server.stop(0)


if __name__ == "__main__":
    main()

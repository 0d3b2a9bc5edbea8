"""The gRPC server of one gunicorn worker: started after fork, beside the worker's HTTP server.

How it runs (measurements in bench/RESULTS.md, "gRPC"):

* One grpcio server per worker, all bound to ``HOST:GRPC_PORT`` with ``SO_REUSEPORT``, so the kernel
  spreads gRPC connections over the workers as gunicorn's shared socket spreads HTTP ones. Each server
  calls the worker's own data plane, registry and admin control: a hot reload, a load or an unload is
  seen by gRPC exactly when REST sees it, and onnxruntime sessions stay per worker, created after fork.
  grpcio is imported only here, after fork (its core starts threads that do not survive a fork). The
  master refuses to start when another server already listens on the port (service/grpc/port.py).
* Under the gevent worker (the default) everything the app made is cooperative (gunicorn.conf.py
  patches before preloading), so gRPC must be too: ``grpc.experimental.gevent.init_gevent()`` makes
  grpcio's completion-queue waits yield to the worker's hub, and its handler "threads" are greenlets on
  that hub, like the HTTP handlers. Without it grpcio's poller blocks the hub and the worker stops
  answering HTTP. Under gthread/sync workers grpcio uses ordinary threads.
* Size: grpcio's own limit is MAX_CONTENT_LENGTH plus 1 MiB, and a request over MAX_CONTENT_LENGTH (but
  under that) is refused with RESOURCE_EXHAUSTED and the REST 413 message, before it is parsed. Bytes
  that are not a protobuf message are INVALID_ARGUMENT (grpcio alone would say INTERNAL).
* Shutdown: when the worker is told to stop (SIGTERM, ``worker.alive`` turns false), a watcher that
  looks every 0.1 s stops the server: new calls are refused (UNAVAILABLE: clients retry elsewhere) and
  calls in flight get up to ``grace`` seconds to finish; gunicorn.conf.py's worker_exit waits for that.
  A gevent worker busy with a CPU-bound call looks only once that call yields, so a call that reaches it
  meanwhile is still served rather than refused (tests/test_grpc.py shows both).
* Hot reload, load and unload need nothing here: the servicer asks the worker's registry on every call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
from google.protobuf.message import DecodeError

from service import logs, metrics
from service.config import Settings
from service.control import Control
from service.dataplane import DataPlane, Timings
from service.errors import BadRequest, PayloadTooLarge, ServiceError
from service.grpc import grpc_predict_v2_pb2 as pb
from service.grpc.servicer import METHODS, InferenceServicer

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
PROTOCOL = "grpc"
HANDLER_THREADS = 16  # concurrent calls per worker (greenlets under gevent)
SIZE_HEADROOM = 1 << 20  # grpcio itself refuses messages this much over MAX_CONTENT_LENGTH
_SERVICE_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]

# ServiceError.status (the REST status) -> gRPC status code.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


class _Refused:
    """What the deserializer hands over instead of a message it will not parse, so that the handler
    answers with the REST message and status (grpcio itself would answer INTERNAL)."""

    __slots__ = ("error",)

    def __init__(self, error: ServiceError) -> None:
        self.error = error


def _deserializer(message_class, limit: int) -> Callable[[bytes], object]:
    def deserialize(data: bytes) -> object:
        if len(data) > limit:
            return _Refused(PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes "
                                            "(MAX_CONTENT_LENGTH)"))
        try:
            return message_class.FromString(data)
        except DecodeError:
            return _Refused(BadRequest(f"the request is not a valid {message_class.DESCRIPTOR.full_name} "
                                       "message (protobuf)"))

    return deserialize


def _handler(servicer: InferenceServicer, name: str, limit: int) -> grpc.RpcMethodHandler:
    """One method: call the servicer, map ServiceError to a status code, count and log the call."""
    method = _SERVICE_DESCRIPTOR.methods_by_name[name]
    request_class = getattr(pb, method.input_type.name)
    response_class = getattr(pb, method.output_type.name)
    call = getattr(servicer, name)
    route = f"/{SERVICE}/{name}"

    def behaviour(request, context: grpc.ServicerContext):
        timings = Timings()
        metadata = dict(context.invocation_metadata())
        request_id = logs.request_id(metadata.get("x-request-id"))
        code, message, response = grpc.StatusCode.OK, "", None
        try:
            if isinstance(request, _Refused):
                raise request.error
            response = call(request, metadata, timings)
        except ServiceError as exc:
            code, message = STATUS_CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.message
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id, "route": route})
            code, message = grpc.StatusCode.INTERNAL, "internal server error; the server log has the details"
        metrics.observe_request(
            route=route, method="POST", path=route, status=code.name, seconds=time.perf_counter() - timings.created,
            timings=timings, model=timings.model, version=timings.version, request_id=request_id,
            remote_addr=context.peer(), protocol=PROTOCOL,
        )
        context.set_trailing_metadata(((logs.REQUEST_ID_HEADER.lower(), request_id),))
        if response is None:
            context.abort(code, message)
        return response

    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=_deserializer(request_class, limit),
        response_serializer=response_class.SerializeToString,
    )


def start(plane: DataPlane, control: Control, settings: Settings) -> grpc.Server:
    """Start this worker's gRPC server on HOST:GRPC_PORT (shared with the other workers)."""
    if _gevent_patched():
        from grpc.experimental import gevent as grpc_gevent

        grpc_gevent.init_gevent()
    limit = settings.max_content_length
    servicer = InferenceServicer(plane, control)
    handlers = {name: _handler(servicer, name, limit) for name in METHODS}
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=HANDLER_THREADS, thread_name_prefix="grpc"),
        handlers=[grpc.method_handlers_generic_handler(SERVICE, handlers)],
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", limit + SIZE_HEADROOM),
            ("grpc.max_send_message_length", -1),
        ],
    )
    address = f"{settings.host}:{settings.grpc_port}"
    server.add_insecure_port(address)  # raises when the port is taken by another program
    server.start()
    log.info("gRPC (Open Inference Protocol) listening on %s", address)
    return server


def stop_when(server: grpc.Server, stopping: Callable[[], bool], grace: float) -> threading.Event:
    """Stop taking calls as soon as ``stopping()`` (checked every 0.1 s); the event is set once the calls
    in flight have finished (or ``grace`` ran out)."""
    done = threading.Event()

    def watch() -> None:
        while not stopping():
            time.sleep(0.1)
        log.info("gRPC server stopping: no new calls, %s s for the ones in flight", grace)
        server.stop(grace).wait()
        done.set()

    threading.Thread(target=watch, name="grpc-stop", daemon=True).start()
    return done


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("threading")

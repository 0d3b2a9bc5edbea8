"""The GRPCInferenceService methods: protobuf in, the data plane's calls, protobuf out.

A thin layer like the REST routes (``service/routes/v2.py``, ``service/routes/admin.py``): every decision
— which model and version answers, how pictures become a batch, readiness, the repository — is the data
plane's, the registry's or the admin control's, so gRPC and REST cannot disagree. Client errors are the
same ``ServiceError``s with the same messages; ``service/grpc/server.py`` turns them into status codes.
"""

from __future__ import annotations

import hmac

from service.control import Control
from service.dataplane import DataPlane, Timings
from service.errors import BadRequest, Forbidden, NotFound, ServiceError, Unauthorized, Unavailable
from service.grpc import grpc_predict_v2_pb2 as pb
from service.grpc.codec import decode_infer_request, encode_infer_response
from service.model_status import repository_index
from service.repository import valid_model_name


class InferenceServicer:
    """One per worker, over the worker's own data plane and admin control (the same objects REST uses)."""

    def __init__(self, plane: DataPlane, control: Control) -> None:
        self.plane = plane
        self.control = control

    # -- health and metadata -------------------------------------------------------------------------

    def ServerLive(self, request: pb.ServerLiveRequest, metadata: dict, timings: Timings) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.plane.live)

    def ServerReady(self, request: pb.ServerReadyRequest, metadata: dict, timings: Timings) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    def ModelReady(self, request: pb.ModelReadyRequest, metadata: dict, timings: Timings) -> pb.ModelReadyResponse:
        """Ready or not, as Triton answers it: a model that is not served (unknown, unloaded, still
        loading) is ``ready: false``, not an error; a malformed version is INVALID_ARGUMENT."""
        try:
            self._model(request.name, request.version, timings)
        except (NotFound, Unavailable):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, metadata: dict, timings: Timings
    ) -> pb.ServerMetadataResponse:
        meta = self.plane.server_metadata()
        return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"], extensions=meta["extensions"])

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, metadata: dict, timings: Timings
    ) -> pb.ModelMetadataResponse:
        """The REST metadata's protocol fields (the protobuf message has no room for its parameters)."""
        meta = self.plane.model_metadata(self._model(request.name, request.version, timings))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]],
        )

    # -- inference -----------------------------------------------------------------------------------

    def ModelInfer(self, request: pb.ModelInferRequest, metadata: dict, timings: Timings) -> pb.ModelInferResponse:
        plane = self.plane
        model = self._model(request.model_name, request.model_version, timings)
        decoded = decode_infer_request(request, max_items=plane.settings.max_batch_items)
        if decoded.images is not None:
            batch = plane.images_to_batch(decoded.images, model, decoded.preprocess, where="inputs[0]")
        else:
            batch = decoded.batch
        probabilities = plane.infer(model, batch, timings)
        return encode_infer_response(
            model_name=model.name, model_version=str(model.version), request_id=request.id,
            probabilities=probabilities, labels=list(model.labels), outputs=decoded.outputs,
        )

    # -- repository extension (behind ADMIN_TOKEN, like /v2/repository) --------------------------------

    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, metadata: dict, timings: Timings
    ) -> pb.RepositoryIndexResponse:
        self._require_token(metadata)
        rows = repository_index(self.plane.registry, ready=request.ready)
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(models=[index(**row) for row in rows])

    def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, metadata: dict, timings: Timings
    ) -> pb.RepositoryModelLoadResponse:
        self._require_token(metadata)
        if request.parameters:
            raise BadRequest("load takes no parameters here (no config or file overrides): publish a version "
                             "into the repository instead")
        name = self._admin_model_name(request)
        self.control.load(name)
        return pb.RepositoryModelLoadResponse(model_name=name, isLoaded=True)

    def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, metadata: dict, timings: Timings
    ) -> pb.RepositoryModelUnloadResponse:
        self._require_token(metadata)
        unknown = set(request.parameters) - {"unload_dependents"}  # tritonclient always sends that one
        if unknown:
            raise BadRequest(f"unload takes no parameters here; got {', '.join(sorted(unknown))}")
        name = self._admin_model_name(request)
        self.control.unload(name)
        return pb.RepositoryModelUnloadResponse(model_name=name, isUnloaded=True)

    # -- helpers ---------------------------------------------------------------------------------------

    def _model(self, name: str, version: str, timings: Timings):
        """The model that answers (an empty version: the default one), noted for metrics and the log."""
        model = self.plane.model(name or None, version or None)
        timings.model, timings.version = model.name, str(model.version)
        return model

    def _require_token(self, metadata: dict) -> None:
        """ADMIN_TOKEN as ``authorization: Bearer <token>`` metadata, compared in constant time."""
        token = self.plane.settings.admin_token
        if not token:
            raise Forbidden("the admin API is off: start the server with ADMIN_TOKEN set to enable it")
        scheme, _, given = metadata.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise Unauthorized("send 'Authorization: Bearer <ADMIN_TOKEN>' with the right token")

    @staticmethod
    def _admin_model_name(request: pb.RepositoryModelLoadRequest | pb.RepositoryModelUnloadRequest) -> str:
        """Triton's model_name (field 2), or KServe's (field 1, Triton's repository_name): see the proto."""
        name = request.model_name or request.repository_name
        if not valid_model_name(name):
            raise BadRequest(f"'{name[:64]}' is not a valid model name (letters, digits, '-', '_', '.')")
        return name


METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
           "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")

__all__ = ["METHODS", "InferenceServicer", "ServiceError"]

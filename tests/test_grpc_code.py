"""The committed gRPC code is what the committed proto generates, and speaks Triton's wire format.

tritonclient.grpc is built from Triton's grpc_service.proto, which shares the ``inference`` package and
message names with KServe's proto: every field both define must have the same number and type, or a
Triton client would silently send values into the wrong fields.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from service.grpc import codegen

from .grpc_helpers import our_file
from .support import ROOT


def test_generated_code_matches_the_proto(tmp_path: Path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools comes with the dev extra (make test installs it)")
    for generated in codegen.generate(tmp_path):
        committed = ROOT / "service" / "grpc" / generated.name
        assert committed.read_bytes() == generated.read_bytes(), f"run `make grpc-code`: {committed.name} is stale"


def _messages(file_descriptor) -> dict[str, dict[str, tuple[int, int, int]]]:
    """message full name -> field name -> (number, type, label), nested messages included."""
    proto = descriptor_pb2.FileDescriptorProto()
    file_descriptor.CopyToProto(proto)
    found: dict[str, dict[str, tuple[int, int, int]]] = {}

    def visit(message, prefix: str) -> None:
        name = f"{prefix}.{message.name}"
        found[name] = {f.name: (f.number, f.type, f.label) for f in message.field}
        for nested in message.nested_type:
            visit(nested, name)

    for message in proto.message_type:
        visit(message, proto.package)
    return found


def test_messages_agree_with_tritons_proto():
    triton = pytest.importorskip("tritonclient.grpc.service_pb2")
    ours, theirs = _messages(our_file()), _messages(triton.DESCRIPTOR)
    shared = sorted(set(ours) & set(theirs))
    assert "inference.ModelInferRequest.InferInputTensor" in shared and len(shared) >= 20
    for message in shared:
        for field, spec in ours[message].items():
            triton_spec = theirs[message].get(field, spec)
            assert spec == triton_spec, f"{message}.{field}: ours {spec}, Triton's {triton_spec}"
    # The services agree on every method we implement: same request and response message names.
    service = our_file().services_by_name["GRPCInferenceService"]
    triton_service = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        theirs_method = triton_service.methods_by_name[method.name]
        assert method.input_type.full_name == theirs_method.input_type.full_name
        assert method.output_type.full_name == theirs_method.output_type.full_name

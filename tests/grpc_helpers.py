"""A raw gRPC stub built from the service's own proto, beside tritonclient in the same process.

The generated module would register ``inference.*`` in protobuf's default descriptor pool, where
tritonclient.grpc registers Triton's messages of the same names (a duplicate-symbol error). So the stub
reads the generated module's serialized descriptor (the compiled proto) into a private pool and makes
its message classes and method callables from that: a client exactly as ``grpc_predict_v2.proto``
defines it, as a KServe or a Go/Java user would generate one.
"""

from __future__ import annotations

import ast
import functools

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .support import ROOT

SERVICE = "inference.GRPCInferenceService"


@functools.cache
def our_file():
    """The FileDescriptor compiled from service/grpc/grpc_predict_v2.proto (in a private pool)."""
    source = (ROOT / "service" / "grpc" / "grpc_predict_v2_pb2.py").read_text()
    call = next(node for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile")
    proto = descriptor_pb2.FileDescriptorProto.FromString(ast.literal_eval(call.args[0]))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return pool.FindFileByName(proto.name)


def message(name: str):
    """The message class ``inference.<name>`` (nested names with dots: ``ModelInferRequest.InferInputTensor``)."""
    return message_factory.GetMessageClass(our_file().pool.FindMessageTypeByName(f"inference.{name}"))


class RawStub:
    """``stub.ModelInfer(request, metadata=..., timeout=...)`` like a generated GRPCInferenceServiceStub."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)])
        for method in our_file().services_by_name["GRPCInferenceService"].methods:
            request = message_factory.GetMessageClass(method.input_type)
            response = message_factory.GetMessageClass(method.output_type)
            setattr(self, method.name, self.channel.unary_unary(
                f"/{SERVICE}/{method.name}", request_serializer=request.SerializeToString,
                response_deserializer=response.FromString))

    def close(self) -> None:
        self.channel.close()

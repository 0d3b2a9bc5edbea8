"""The Open Inference Protocol (KServe V2) over gRPC, on GRPC_PORT: see server.py for how it runs.

``grpc_predict_v2.proto`` is the protocol; ``grpc_predict_v2_pb2*.py`` are generated from it (committed,
``make grpc-code``); ``codec.py`` translates ModelInfer messages to arrays and back; ``servicer.py`` maps
each method onto the data plane. Nothing here is imported unless GRPC_PORT is set.
"""

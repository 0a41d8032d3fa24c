"""
The benchmark's logic (bench/logic.ts) on Python grpcio, the way EMQX's official ExHook examples
serve it: `grpc.server` with a ThreadPoolExecutor (10 workers, as in the examples), the messages
from protoc's Python output for proto/emqx/exhook/v3/exhook.proto.

    python3 grpcio_server.py <dir with the generated emqx/exhook/v3/exhook_pb2.py> [port]

Prints `READY <port>` once serving. Debian packages: python3-grpcio python3-protobuf
protobuf-compiler (bench/run.ts installs them when this server is asked for).
"""
import os
import sys
from concurrent import futures

import grpc

sys.path.insert(0, sys.argv[1])
from emqx.exhook.v3 import exhook_pb2 as pb  # noqa: E402

USERS = {f"user{i}": f"pass{i}" for i in range(1000)}
PREFIX = b"v1|"


def publish(req, _ctx):
    m = req.message
    if not (m.topic == "sensors" or m.topic.startswith("sensors/")):
        return pb.ValuedResponse(type=pb.ValuedResponse.IGNORE)
    out = pb.Message()
    out.CopyFrom(m)
    out.topic = "processed/" + m.topic[len("sensors/"):]
    out.payload = PREFIX + m.payload
    return pb.ValuedResponse(type=pb.ValuedResponse.CONTINUE, message=out)


def authenticate(req, _ctx):
    c = req.clientinfo
    ok = c.username in USERS and USERS[c.username] == c.password
    return pb.ValuedResponse(type=pb.ValuedResponse.STOP_AND_RETURN, bool_result=ok)


def main():
    handlers = {
        "OnMessagePublish": grpc.unary_unary_rpc_method_handler(
            publish, request_deserializer=pb.MessagePublishRequest.FromString, response_serializer=pb.ValuedResponse.SerializeToString
        ),
        "OnClientAuthenticate": grpc.unary_unary_rpc_method_handler(
            authenticate, request_deserializer=pb.ClientAuthenticateRequest.FromString, response_serializer=pb.ValuedResponse.SerializeToString
        ),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=int(os.environ.get("GRPCIO_WORKERS", "10"))))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("emqx.exhook.v3.HookProvider", handlers),))
    port = server.add_insecure_port(f"127.0.0.1:{sys.argv[2] if len(sys.argv) > 2 else 0}")
    server.start()
    print(f"READY {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

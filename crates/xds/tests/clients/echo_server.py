"""A gRPC server answering /sextant.test.Echo/Say with its own name.

Usage: echo_server.py NAME. Binds 127.0.0.1 on a free port and prints it.
Raw bytes in and out, so no generated code is needed.
"""
import sys
from concurrent import futures

import grpc


def main():
    name = sys.argv[1].encode()
    # SO_REUSEPORT off: a leftover server must not silently share the port.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)])
    handler = grpc.method_handlers_generic_handler(
        "sextant.test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(lambda req, ctx: name)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

"""A gRPC server answering /sextant.test.Echo/Say with its own name.

Usage: echo_server.py NAME [--fail-every N] [--delay SECONDS]. Binds
127.0.0.1 on a free port and prints it. With --fail-every N, every Nth call
(the 1st, the N+1th, ...) fails with UNAVAILABLE; with --delay, each answer
waits. Raw bytes in and out, so no generated code is needed.
"""
import itertools
import sys
import time
from concurrent import futures

import grpc


def main():
    name = sys.argv[1].encode()
    args = sys.argv[2:]
    fail_every = int(args[args.index("--fail-every") + 1]) if "--fail-every" in args else 0
    delay = float(args[args.index("--delay") + 1]) if "--delay" in args else 0.0
    calls = itertools.count()

    def say(_request, context):
        n = next(calls)
        if delay:
            time.sleep(delay)
        if fail_every and n % fail_every == 0:
            context.abort(grpc.StatusCode.UNAVAILABLE, "failing on purpose")
        return name

    # SO_REUSEPORT off: a leftover server must not silently share the port.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)])
    handler = grpc.method_handlers_generic_handler(
        "sextant.test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

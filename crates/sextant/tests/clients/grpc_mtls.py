"""Proxyless gRPC over the mesh's mutual TLS, with grpcio on both ends.

Usage: GRPC_XDS_BOOTSTRAP=FILE grpc_mtls.py PORT SERVER_CERT_DIR TARGET

Serves /sextant.test.Echo/Say on 127.0.0.1:PORT over TLS that requires a
client certificate chaining to SERVER_CERT_DIR/root-cert.pem, with the
server's workload certificate from that directory (an agent's files); the
answer is the caller's identities as the server saw them (JSON).

Then, for each line on standard input, calls xds:///TARGET with xDS
credentials (fallback: plaintext) on a new channel:
  "refused": expects every call for 3 s to fail (the server takes no
             plaintext); prints {"refused": N, "error": "..."}.
  "mtls":    calls until one succeeds (at most 30 s), then 20 more that must
             all succeed; prints {"seconds": time to the first success,
             "calls": 21, "peer": identities the server saw}.
  "denied":  calls until one fails (at most 30 s), then 10 more that must
             all fail; prints {"seconds": time to the first failure,
             "error": "..."} (the client refuses the server's identity).
Anything unexpected prints {"fail": "..."} and exits 1.
"""
import json
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc
import grpc.experimental

SAY = "/sextant.test.Echo/Say"


def serve(port, cert_dir):
    d = Path(cert_dir)

    def say(_request, context):
        return json.dumps(
            [i.decode() for i in (context.peer_identities() or [])]
        ).encode()

    handler = grpc.method_handlers_generic_handler(
        "sextant.test.Echo",
        {"Say": grpc.unary_unary_rpc_method_handler(say)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    creds = grpc.ssl_server_credentials(
        [((d / "key.pem").read_bytes(), (d / "cert-chain.pem").read_bytes())],
        root_certificates=(d / "root-cert.pem").read_bytes(),
        require_client_auth=True,
    )
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    server.start()
    return server


def channel(target):
    creds = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
    return grpc.secure_channel(f"xds:///{target}", creds)


def refused(target):
    with channel(target) as ch:
        call = ch.unary_unary(SAY)
        deadline = time.time() + 3
        n, error = 0, ""
        while time.time() < deadline:
            try:
                answer = call(b"hi", timeout=2)
                return {"fail": f"served without mutual TLS: {answer!r}"}
            except grpc.RpcError as e:
                n, error = n + 1, f"{e.code()}: {e.details()}"
            time.sleep(0.1)
        return {"refused": n, "error": error}


def mtls(target):
    started = time.time()
    with channel(target) as ch:
        call = ch.unary_unary(SAY)
        error = ""
        while True:
            try:
                peer = json.loads(call(b"hi", timeout=5))
                break
            except grpc.RpcError as e:
                error = f"{e.code()}: {e.details()}"
            if time.time() - started > 30:
                return {"fail": f"no call succeeded in 30 s: {error}"}
            time.sleep(0.05)
        first = time.time() - started
        for i in range(20):
            try:
                again = json.loads(call(b"hi", timeout=5))
            except grpc.RpcError as e:
                return {"fail": f"call {i + 2} failed after the first: {e.code()}: {e.details()}"}
            if again != peer:
                return {"fail": f"the server saw {again}, then {peer}"}
        return {"seconds": round(first, 3), "calls": 21, "peer": peer}


def denied(target):
    started = time.time()
    with channel(target) as ch:
        call = ch.unary_unary(SAY)
        while True:
            try:
                call(b"hi", timeout=5)
            except grpc.RpcError as e:
                error = f"{e.code()}: {e.details()}"
                break
            if time.time() - started > 30:
                return {"fail": "every call succeeded for 30 s"}
            time.sleep(0.05)
        first = time.time() - started
        for i in range(10):
            try:
                answer = call(b"hi", timeout=5)
                return {"fail": f"call {i + 2} succeeded after the first failed: {answer!r}"}
            except grpc.RpcError:
                pass
        return {"seconds": round(first, 3), "error": error}


def main():
    port, cert_dir, target = sys.argv[1], sys.argv[2], sys.argv[3]
    server = serve(port, cert_dir)
    print(json.dumps({"serving": int(port)}), flush=True)
    for line in sys.stdin:
        step = line.strip()
        result = {"refused": refused, "mtls": mtls, "denied": denied}[step](target)
        print(json.dumps(result), flush=True)
        if "fail" in result:
            server.stop(0)
            sys.exit(1)
    server.stop(0)


if __name__ == "__main__":
    main()

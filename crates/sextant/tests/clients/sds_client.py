"""An SDS client (grpcio, Envoy's own protos from xds-protos) on a unix socket.

Usage: sds_client.py SOCKET NAME [NAME...]
Opens SecretDiscoveryService/StreamSecrets, asks for NAMEs, ACKs every
response and prints one JSON line per response: {"version", "nonce",
"secrets": {name: {"chain"|"key"|"root": pem}}}. Runs until killed or the
stream ends (then prints {"end": "..."}).
"""
import json
import queue
import sys

import grpc
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def main():
    socket, names = sys.argv[1], sys.argv[2:]
    # grpcio's default authority for a unix socket is the escaped path,
    # which is not a valid :authority (h2 refuses the stream); Envoy sends
    # its cluster name.
    channel = grpc.insecure_channel("unix:" + socket, options=[("grpc.default_authority", "localhost")])
    stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
    requests = queue.Queue()
    requests.put(discovery_pb2.DiscoveryRequest(type_url=TYPE, resource_names=names))

    def outgoing():
        while True:
            yield requests.get()

    try:
        for response in stub.StreamSecrets(outgoing()):
            secrets = {}
            for any_ in response.resources:
                s = secret_pb2.Secret()
                any_.Unpack(s)
                if s.HasField("tls_certificate"):
                    secrets[s.name] = {
                        "chain": s.tls_certificate.certificate_chain.inline_bytes.decode(),
                        "key": s.tls_certificate.private_key.inline_bytes.decode(),
                    }
                elif s.HasField("validation_context"):
                    secrets[s.name] = {"root": s.validation_context.trusted_ca.inline_bytes.decode()}
            print(json.dumps({"version": response.version_info, "nonce": response.nonce, "secrets": secrets}), flush=True)
            requests.put(
                discovery_pb2.DiscoveryRequest(
                    type_url=TYPE,
                    resource_names=names,
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                )
            )
    except grpc.RpcError as e:
        print(json.dumps({"end": "%s: %s" % (e.code().name, e.details())}), flush=True)


if __name__ == "__main__":
    main()

"""Istio's certificate API called with grpcio, as an agent would.

The request and response messages are built from a descriptor written here
(istio/api security/v1alpha1/ca.proto: csr = 1, validity_duration = 3,
metadata = 4; cert_chain = 1), so that the encoding is protobuf's own and
not Sextant's.

Usage: ca_client.py ADDR ROOT_PEM SERVER_NAME TOKEN CSR_FILE TTL_SECONDS [CERT KEY]
TOKEN "-" sends no token; CERT and KEY (PEM files) are a client certificate. Prints one JSON line: {"chain": [...]} or
{"code": "UNAUTHENTICATED", "details": "..."}.
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def messages():
    f = descriptor_pb2.FileDescriptorProto()
    f.name = "ca_client.proto"
    f.package = "istio.v1.auth"
    f.dependency.append("google/protobuf/struct.proto")
    T = descriptor_pb2.FieldDescriptorProto
    req = f.message_type.add()
    req.name = "IstioCertificateRequest"
    for name, number, kind, label, type_name in [
        ("csr", 1, T.TYPE_STRING, T.LABEL_OPTIONAL, None),
        ("validity_duration", 3, T.TYPE_INT64, T.LABEL_OPTIONAL, None),
        ("metadata", 4, T.TYPE_MESSAGE, T.LABEL_OPTIONAL, ".google.protobuf.Struct"),
    ]:
        field = req.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
    resp = f.message_type.add()
    resp.name = "IstioCertificateResponse"
    resp.field.add(name="cert_chain", number=1, type=T.TYPE_STRING, label=T.LABEL_REPEATED)
    pool = descriptor_pool.Default()
    from google.protobuf import struct_pb2  # noqa: F401  (registers struct.proto)
    pool.Add(f)
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateRequest")),
        get(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateResponse")),
    )


def main():
    addr, root, server_name, token, csr_file, ttl = sys.argv[1:7]
    Request, Response = messages()
    client = {}
    if len(sys.argv) > 8:
        client = {
            "certificate_chain": open(sys.argv[7], "rb").read(),
            "private_key": open(sys.argv[8], "rb").read(),
        }
    creds = grpc.ssl_channel_credentials(root_certificates=open(root, "rb").read(), **client)
    channel = grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", server_name)])
    call = channel.unary_unary(
        "/istio.v1.auth.IstioCertificateService/CreateCertificate",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )
    request = Request(csr=open(csr_file).read(), validity_duration=int(ttl))
    request.metadata.fields["WorkloadName"].string_value = "web-1"
    metadata = [] if token == "-" else [("authorization", "Bearer " + token)]
    try:
        response = call(request, metadata=metadata, timeout=10)
        print(json.dumps({"chain": list(response.cert_chain)}))
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name, "details": e.details()}))


if __name__ == "__main__":
    main()

"""One TLS handshake and HTTP request with Python's ssl module.

Usage: tls_probe.py PORT ROOT_PEM [CERT_PEM KEY_PEM]
Checks the server's certificate against ROOT_PEM (no host name check: a
workload certificate names a SPIFFE id, not a host), presents CERT/KEY when
given, sends GET / and prints one JSON line: {"peer": PEM of the server's
certificate, "status": first line} or {"error": "..."}.
"""
import json
import socket
import ssl
import sys


def main():
    port, root = int(sys.argv[1]), sys.argv[2]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(root)
    if len(sys.argv) > 4:
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as tls:
                peer = ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))
                tls.sendall(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        status = data.split(b"\r\n", 1)[0].decode(errors="replace")
        print(json.dumps({"peer": peer, "status": status}))
    except (OSError, ssl.SSLError) as e:
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))


if __name__ == "__main__":
    main()

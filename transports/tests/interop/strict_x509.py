"""Verifies Troupe certificates the way Python's `cryptography` does.

Usage: strict_x509.py CA_PEM NODE_PEM NODE_NAME

Loads both certificates (strict DER: an explicitly encoded DEFAULT value is
refused with "EncodedDefault"), reads every extension, and verifies the node
certificate against the CA as a TLS server named NODE_NAME and as a TLS
client, with cryptography's web-PKI policy (what aioquic relies on).
Prints "ok" and exits 0 when all of that passes. Exits 3 when `cryptography`
cannot be imported (the caller reports the check as skipped).
"""

import sys

try:
    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store
except ImportError as e:  # pragma: no cover - reported as a skip
    print(f"cryptography is not installed: {e}", file=sys.stderr)
    sys.exit(3)


def load(path):
    with open(path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    # Extensions are parsed lazily: read them all.
    return cert, [(e.oid.dotted_string, e.critical, e.value) for e in cert.extensions]


def main():
    ca_path, node_path, name = sys.argv[1:4]
    ca, _ = load(ca_path)
    node, exts = load(node_path)
    store = Store([ca])
    PolicyBuilder().store(store).build_server_verifier(x509.DNSName(name)).verify(node, [])
    client = PolicyBuilder().store(store).build_client_verifier().verify(node, [])
    names = [n.value for n in client.subjects or []]
    if names != [name]:
        raise SystemExit(f"client certificate names {names}, expected [{name!r}]")
    print("ok", ", ".join(f"{oid}{' (critical)' if crit else ''}" for oid, crit, _ in exts))


if __name__ == "__main__":
    main()

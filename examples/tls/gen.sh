#!/usr/bin/env bash
# TEST-ONLY PKI for examples/tls.yaml and the tests: a throwaway CA and three leaf certificates
# (EC P-256, valid for 100 years so the example never expires). The keys are public, in the
# repository: never use them for anything but local tests. Re-run to make a fresh set:
#   examples/tls/gen.sh            (writes into examples/tls/)
# Files:
#   ca.pem                 the trust anchor (its key is thrown away)
#   proxy.pem/.key         remora's identity: serves the listener (DNS proxy.mesh.test) and is
#                          its client certificate upstream (URI spiffe://mesh.test/ns/default/sa/proxy)
#   frontend.pem/.key      a downstream client (URI spiffe://mesh.test/ns/default/sa/frontend)
#   backend.pem/.key       the upstream server (DNS backend.mesh.test)
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
days=36500
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.key"
openssl req -new -x509 -key "$tmp/ca.key" -out ca.pem -days "$days" -subj "/CN=remora test CA (TEST ONLY)" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
leaf() { # name cn san
    openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$1.key"
    openssl req -new -key "$1.key" -out "$tmp/$1.csr" -subj "/CN=$2 (TEST ONLY)"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nsubjectAltName=%s\n' "$3" > "$tmp/$1.ext"
    openssl x509 -req -in "$tmp/$1.csr" -CA ca.pem -CAkey "$tmp/ca.key" -CAcreateserial -CAserial "$tmp/ca.srl" \
        -out "$1.pem" -days "$days" -extfile "$tmp/$1.ext"
}
leaf proxy proxy "DNS:proxy.mesh.test,URI:spiffe://mesh.test/ns/default/sa/proxy"
leaf frontend frontend "URI:spiffe://mesh.test/ns/default/sa/frontend"
leaf backend backend "DNS:backend.mesh.test,URI:spiffe://mesh.test/ns/default/sa/backend"

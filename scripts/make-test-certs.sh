#!/usr/bin/env bash
# Makes a throw-away CA and a server certificate for 127.0.0.1 (P-256, valid 2 days) with
# openssl, for the scripts that run a TLS listener on the loopback address (bench-tls.sh,
# pgo-train.sh). Never for production.
#
#   scripts/make-test-certs.sh DIR     # writes DIR/ca.pem, DIR/server.pem, DIR/server.key
set -euo pipefail
[ $# -eq 1 ] || { sed -n '2,6p' "$0" >&2; exit 2; }
command -v openssl >/dev/null || { echo "openssl is needed (Debian: openssl)" >&2; exit 1; }
cd "$1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout ca.key -out ca.pem -subj "/CN=robustmq-edge test CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -out server.pem -extfile ext.cnf 2>/dev/null

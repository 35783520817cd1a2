#!/usr/bin/env bash
# Makes a private CA and certificates signed by it, for MESH_TLS_* (a test or a small
# cluster; a real deployment would use its own PKI).
#   scripts/test-ca.sh DIR [NAME...]   (NAME defaults to "mesh")
# writes DIR/ca.pem (MESH_TLS_CA) and, per NAME, DIR/NAME.pem (MESH_TLS_CERT) and
# DIR/NAME.key (MESH_TLS_KEY). The CA is made once and reused; its key stays in DIR/ca.key.
set -euo pipefail
dir=${1:?usage: scripts/test-ca.sh DIR [NAME...]}
shift
[ $# -gt 0 ] || set -- mesh
mkdir -p "$dir"
cd "$dir"
if [ ! -f ca.pem ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
        -subj "/CN=mesh test CA" -keyout ca.key -out ca.pem 2>/dev/null
fi
for name in "$@"; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
        -out "$name.pem" 2>/dev/null
    rm -f "$name.csr"
    chmod 600 "$name.key"
done
echo "test-ca: $dir/ca.pem and $(printf '%s.pem ' "$@")in $dir"

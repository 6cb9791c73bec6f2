#!/bin/sh
# Prepares an OpenBao (or Vault) server for vacme, laid out like the homelab:
#
#   pki/      root CA (EC P-256, 10 years)
#   pki_int/  intermediate CA signed by the root (EC P-256, 5 years)
#   pki_int/roles/lab-internal   the role vacme signs with (EC P-256, 90 days)
#   policy vacme                 sign with that role, revoke, read certificates
#   auth/approle/role/vacme      AppRole with that policy and a short token TTL
#
# and writes the AppRole's role_id and a secret_id (mode 0600) plus the root CA
# certificate (root.pem, public) to $OUT_DIR.
#
# Idempotent: run it again and it changes nothing that exists already. It never
# replaces a CA nor retunes a mount that has one; it rewrites the role, the policy
# and the AppRole role with the values below; it keeps $OUT_DIR/secret-id while the server still knows it and
# makes a new one otherwise (a dev server forgets everything on restart).
#
# Environment:
#   BAO_ADDR or VAULT_ADDR     server address (required)
#   BAO_TOKEN or VAULT_TOKEN   a token allowed to mount engines, write policies
#                              and configure auth methods (required)
#   BAO_CACERT or VAULT_CACERT the CA of the server's TLS certificate, if private
#   OUT_DIR          where role-id, secret-id and root.pem go  [./vacme-credentials]
#   OUT_OWNER        chown the written files to this uid:gid   [unset: no chown]
#   ALLOWED_DOMAINS  comma-separated domains of the role        [lab.example]
#   ROOT_MOUNT [pki]  INT_MOUNT [pki_int]  ROLE [lab-internal]
#   POLICY [vacme]  APPROLE_MOUNT [approle]  APPROLE_ROLE [vacme]
#   ROLE_TTL [2160h]  ROLE_MAX_TTL [8760h]  TOKEN_TTL [1h]  TOKEN_MAX_TTL [4h]
#   ROOT_CN [Lab Root CA]  INT_CN [Lab Intermediate CA]
#   BAO [bao, else vault]      the CLI to use
#   WAIT_SECS [60]             how long to wait for the server to answer
set -eu

# Every file this script writes is private unless it says otherwise.
umask 077

BAO_ADDR=${BAO_ADDR:-${VAULT_ADDR:-}}
BAO_TOKEN=${BAO_TOKEN:-${VAULT_TOKEN:-}}
if [ -z "$BAO_ADDR" ] || [ -z "$BAO_TOKEN" ]; then
    echo "init-bao: set BAO_ADDR (or VAULT_ADDR) and BAO_TOKEN (or VAULT_TOKEN)" >&2
    exit 2
fi
VAULT_ADDR=$BAO_ADDR
VAULT_TOKEN=$BAO_TOKEN
export BAO_ADDR BAO_TOKEN VAULT_ADDR VAULT_TOKEN

OUT_DIR=${OUT_DIR:-./vacme-credentials}
OUT_OWNER=${OUT_OWNER:-}
ALLOWED_DOMAINS=${ALLOWED_DOMAINS:-lab.example}
ROOT_MOUNT=${ROOT_MOUNT:-pki}
INT_MOUNT=${INT_MOUNT:-pki_int}
ROLE=${ROLE:-lab-internal}
POLICY=${POLICY:-vacme}
APPROLE_MOUNT=${APPROLE_MOUNT:-approle}
APPROLE_ROLE=${APPROLE_ROLE:-vacme}
ROLE_TTL=${ROLE_TTL:-2160h}
ROLE_MAX_TTL=${ROLE_MAX_TTL:-8760h}
TOKEN_TTL=${TOKEN_TTL:-1h}
TOKEN_MAX_TTL=${TOKEN_MAX_TTL:-4h}
ROOT_CN=${ROOT_CN:-Lab Root CA}
INT_CN=${INT_CN:-Lab Intermediate CA}
WAIT_SECS=${WAIT_SECS:-60}

if [ -z "${BAO:-}" ]; then
    if command -v bao >/dev/null 2>&1; then BAO=bao; else BAO=vault; fi
fi
command -v "$BAO" >/dev/null 2>&1 || { echo "init-bao: no '$BAO' CLI on PATH" >&2; exit 2; }

say() { echo "init-bao: $*"; }
die() { echo "init-bao: $*" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

# `$BAO status` exits 0 when the server is up and unsealed, 2 when sealed, 1 when unreachable.
waited=0
until "$BAO" status >/dev/null 2>&1; do
    if [ "$waited" -ge "$WAIT_SECS" ]; then
        "$BAO" status >&2 || true
        die "no unsealed server at $BAO_ADDR after ${WAIT_SECS}s"
    fi
    sleep 1
    waited=$((waited + 1))
done
say "server at $BAO_ADDR is up"

mounted() { "$BAO" read "sys/mounts/$1" >/dev/null 2>&1; }
has_ca() { "$BAO" read -field=certificate "$1/cert/ca" >/dev/null 2>&1; }

# --- root CA ---------------------------------------------------------------
if mounted "$ROOT_MOUNT"; then
    say "$ROOT_MOUNT/ already mounted"
else
    "$BAO" secrets enable -path="$ROOT_MOUNT" pki >/dev/null
    say "mounted $ROOT_MOUNT/"
fi
if has_ca "$ROOT_MOUNT"; then
    say "$ROOT_MOUNT/ already has its root CA"
else
    # A mount that has a CA keeps its tuning; only one being set up is tuned.
    "$BAO" secrets tune -max-lease-ttl=87600h "$ROOT_MOUNT" >/dev/null
    "$BAO" write -field=certificate "$ROOT_MOUNT/root/generate/internal" \
        common_name="$ROOT_CN" key_type=ec key_bits=256 ttl=87600h >/dev/null
    say "generated the root CA in $ROOT_MOUNT/"
fi

# --- intermediate CA, signed by the root -----------------------------------
if mounted "$INT_MOUNT"; then
    say "$INT_MOUNT/ already mounted"
else
    "$BAO" secrets enable -path="$INT_MOUNT" pki >/dev/null
    say "mounted $INT_MOUNT/"
fi
if has_ca "$INT_MOUNT"; then
    say "$INT_MOUNT/ already has its intermediate CA"
else
    "$BAO" secrets tune -max-lease-ttl=43800h "$INT_MOUNT" >/dev/null
    "$BAO" write -field=csr "$INT_MOUNT/intermediate/generate/internal" \
        common_name="$INT_CN" key_type=ec key_bits=256 >"$work/int.csr"
    # pem_bundle: the intermediate followed by the root, so <mount>/ca_chain has both.
    "$BAO" write -field=certificate "$ROOT_MOUNT/root/sign-intermediate" \
        csr=@"$work/int.csr" format=pem_bundle ttl=43800h >"$work/int.pem"
    "$BAO" write "$INT_MOUNT/intermediate/set-signed" certificate=@"$work/int.pem" >/dev/null
    say "generated the intermediate CA in $INT_MOUNT/, signed by $ROOT_MOUNT/"
fi

# --- the role vacme signs with ---------------------------------------------
"$BAO" write "$INT_MOUNT/roles/$ROLE" \
    allowed_domains="$ALLOWED_DOMAINS" allow_subdomains=true allow_ip_sans=true \
    key_type=ec key_bits=256 ttl="$ROLE_TTL" max_ttl="$ROLE_MAX_TTL" \
    use_csr_sans=false use_csr_common_name=false >/dev/null
say "wrote role $INT_MOUNT/roles/$ROLE (allowed_domains=$ALLOWED_DOMAINS, EC P-256, names only from vacme, ttl $ROLE_TTL)"

# --- vacme's policy ----------------------------------------------------------
# Exactly the calls vacme makes with its token:
#   POST <mount>/sign/<role>   issue a certificate for a validated CSR
#   GET  <mount>/roles/<role>  read the role's key type and whether it takes names from the CSR
#   POST <mount>/revoke        revoke (by serial, or by the certificate itself)
#   GET  <mount>/cert/<serial> see whether a certificate was revoked in Vault
#   LIST <mount>/certs         after a crash mid-sign, find what Vault signed anyway
#   GET  auth/token/lookup-self, POST auth/token/renew-self: keep its token alive
# <mount>/ca_chain, sys/health and auth/<approle>/login are unauthenticated and
# need no grant. An ACME profile (or [vault.roles_by_key] entry) signed by another role needs
# one more sign path and one more roles path.
"$BAO" policy write "$POLICY" - >/dev/null <<EOF
path "$INT_MOUNT/sign/$ROLE" { capabilities = ["update"] }
path "$INT_MOUNT/roles/$ROLE" { capabilities = ["read"] }
path "$INT_MOUNT/revoke"     { capabilities = ["update"] }
path "$INT_MOUNT/cert/*"     { capabilities = ["read"] }
path "$INT_MOUNT/certs"      { capabilities = ["list"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self"  { capabilities = ["update"] }
EOF
say "wrote policy $POLICY"

# --- AppRole ---------------------------------------------------------------
if "$BAO" read "sys/auth/$APPROLE_MOUNT" >/dev/null 2>&1; then
    say "auth/$APPROLE_MOUNT/ already enabled"
else
    "$BAO" auth enable -path="$APPROLE_MOUNT" approle >/dev/null
    say "enabled auth/$APPROLE_MOUNT/"
fi
# vacme logs in again whenever Vault answers 403, so a short token TTL costs nothing.
"$BAO" write "auth/$APPROLE_MOUNT/role/$APPROLE_ROLE" \
    token_policies="$POLICY" token_no_default_policy=true \
    token_ttl="$TOKEN_TTL" token_max_ttl="$TOKEN_MAX_TTL" >/dev/null
say "wrote AppRole $APPROLE_ROLE (policy $POLICY, token ttl $TOKEN_TTL, max $TOKEN_MAX_TTL)"

# --- credentials for vacme ---------------------------------------------------
mkdir -p "$OUT_DIR"

# Writes stdin to $OUT_DIR/$1 atomically, mode 0600 (umask), owned by OUT_OWNER if set.
put() {
    tmp="$OUT_DIR/.$1.tmp"
    cat >"$tmp"
    [ -s "$tmp" ] || { rm -f "$tmp"; die "empty value for $1"; }
    if [ -n "$OUT_OWNER" ]; then chown "$OUT_OWNER" "$tmp"; fi
    mv -f "$tmp" "$OUT_DIR/$1"
}

"$BAO" read -field=role_id "auth/$APPROLE_MOUNT/role/$APPROLE_ROLE/role-id" | put role-id
say "wrote $OUT_DIR/role-id"

# A secret_id the server still knows is kept; the lookup reads it from stdin, not argv.
known=no
if [ -s "$OUT_DIR/secret-id" ] &&
    "$BAO" write -format=json "auth/$APPROLE_MOUNT/role/$APPROLE_ROLE/secret-id/lookup" secret_id=- \
        <"$OUT_DIR/secret-id" 2>/dev/null | grep -q '"secret_id_accessor"'; then
    known=yes
fi
if [ "$known" = yes ]; then
    say "kept $OUT_DIR/secret-id (still valid)"
else
    "$BAO" write -f -field=secret_id "auth/$APPROLE_MOUNT/role/$APPROLE_ROLE/secret-id" | put secret-id
    say "wrote a new secret_id to $OUT_DIR/secret-id"
fi

# The root certificate is public: clients that check the issued chains trust it.
"$BAO" read -field=certificate "$ROOT_MOUNT/cert/ca" | put root.pem
chmod 0644 "$OUT_DIR/root.pem"
say "wrote $OUT_DIR/root.pem"

say "done: vacme signs with $INT_MOUNT/sign/$ROLE as AppRole $APPROLE_ROLE"

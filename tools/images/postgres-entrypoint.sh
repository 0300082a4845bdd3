#!/bin/sh
# Entrypoint of Foundry's locally built PostgreSQL image. It offers the interface of
# the official postgres image, so the chart behaves the same with either:
#   POSTGRES_PASSWORD          the superuser's password (required, unless
#                              POSTGRES_HOST_AUTH_METHOD=trust)
#   POSTGRES_USER              the superuser (default postgres)
#   POSTGRES_DB                a database made at initialisation (default $POSTGRES_USER)
#   POSTGRES_HOST_AUTH_METHOD  pg_hba method for TCP clients (default scram-sha-256)
#   POSTGRES_INITDB_ARGS       extra initdb arguments
#   PGDATA                     the data directory (default /var/lib/postgresql/data)
# An empty PGDATA is initialised once; a restart reuses it. The server runs as uid
# 999: started as root, the script fixes the directories' owner and drops to 999.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

die() { echo "postgres-entrypoint: error: $*" >&2; exit 1; }

initialise() {
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
    die "PGDATA ($PGDATA) is empty and POSTGRES_PASSWORD is not set: set it (or POSTGRES_HOST_AUTH_METHOD=trust)"
  fi
  echo "postgres-entrypoint: initialising $PGDATA (superuser $user, database $db)" >&2
  # The password reaches initdb through a pipe: no file, and nothing in argv.
  # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of flags
  printf '%s\n' "${POSTGRES_PASSWORD:-}" | initdb --username="$user" --pwfile=/dev/stdin \
    --auth-local=trust --auth-host="$auth" ${POSTGRES_INITDB_ARGS:-} >&2
  printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
  printf 'host all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    # Listening on the socket only, so no client sees a half-made server.
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >&2
    echo 'CREATE DATABASE :"db";' | psql -X -q -v ON_ERROR_STOP=1 -v db="$db" --username="$user" --dbname=postgres >&2
    pg_ctl -D "$PGDATA" -w -m fast stop >&2
  fi
}

case "${1:-postgres}" in
  -*) set -- postgres "$@" ;;
  postgres) set -- "$@" ;;
  *) exec "$@" ;;  # any other command runs as given
esac
[ $# -gt 0 ] || set -- postgres

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  for dir in "$PGDATA" /var/run/postgresql; do
    [ "$(stat -c %u "$dir")" = 999 ] || chown 999:999 "$dir"
  done
  chmod 700 "$PGDATA"
  exec setpriv --reuid=999 --regid=999 --init-groups "$0" "$@"
fi

mkdir -p "$PGDATA" 2>/dev/null || die "cannot create PGDATA $PGDATA as uid $(id -u): make its parent writable (fsGroup)"
chmod 700 "$PGDATA" 2>/dev/null || die "PGDATA $PGDATA is not owned by uid $(id -u)"
[ -s "$PGDATA/PG_VERSION" ] || initialise
exec "$@"

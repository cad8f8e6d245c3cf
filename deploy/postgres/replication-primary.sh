#!/bin/sh
# Run once by the postgres image on the primary's first start (docker-entrypoint-initdb.d):
# a replication account for the standby and the pg_hba line that lets it stream.
# REPLICATION_PASSWORD comes from compose.scale-out.yaml.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"

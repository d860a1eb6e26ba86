#!/usr/bin/env bash
# Start a local PostgreSQL (Debian package, loopback only) with a test role and database, and print
# the SQLAlchemy URL for ADVISOR_TEST_POSTGRES_URL. Idempotent.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq postgresql) >/dev/null
fi
version=$(ls /etc/postgresql | sort -n | tail -1)
pg_ctlcluster "$version" main start >/dev/null 2>&1 || pg_ctlcluster "$version" main status >/dev/null
for _ in $(seq 1 30); do
  su postgres -c "pg_isready -q -h 127.0.0.1" && break
  sleep 1
done
su postgres -c "psql -q -tc \"SELECT 1 FROM pg_roles WHERE rolname='advisor'\" | grep -q 1 || psql -q -c \"CREATE ROLE advisor LOGIN PASSWORD 'advisor'\"" >/dev/null
su postgres -c "psql -q -tc \"SELECT 1 FROM pg_database WHERE datname='advisor_test'\" | grep -q 1 || psql -q -c \"CREATE DATABASE advisor_test OWNER advisor\"" >/dev/null
echo "postgresql+psycopg://advisor:advisor@127.0.0.1:5432/advisor_test"

#!/usr/bin/env bash
# Make sure the services the tests use are up on this machine: Redis on 127.0.0.1:6379 and PostgreSQL on
# 127.0.0.1:5432 with a database "test" that local users reach without a password. Installs Debian's packages when
# they are missing. Idempotent; a no-op when both answer. In CI (CI=true) a service that cannot be had fails the
# run: the tests that need it fail rather than skip there anyway.
set -uo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=""; fi
fi
can_admin() { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }
apt_install() {
    can_admin || return 1
    [ -n "${APT_UPDATED:-}" ] || { $SUDO apt-get update -qq && APT_UPDATED=1; }
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
redis_up() { command -v redis-cli >/dev/null && [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
pg_up() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }
failed=0

if ! redis_up; then
    command -v redis-server >/dev/null || apt_install redis-server
    if command -v redis-server >/dev/null; then
        dir=/var/lib/redis log=/var/log/redis/ci.log
        if ! can_admin; then dir=$(mktemp -d); log=$dir/redis.log; fi
        $SUDO mkdir -p "$dir" "$(dirname "$log")" 2>/dev/null
        $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir "$dir" --logfile "$log" >/dev/null
        for _ in $(seq 50); do redis_up && break; sleep 0.1; done
    fi
    redis_up && echo "services: Redis started" || { echo "services: Redis is not available" >&2; failed=1; }
fi

if ! pg_up; then
    command -v pg_ctlcluster >/dev/null || apt_install postgresql
    if command -v pg_ctlcluster >/dev/null && can_admin; then
        version=$(ls /etc/postgresql | sort -V | tail -1)
        hba=/etc/postgresql/$version/main/pg_hba.conf
        # The tests connect as postgres over TCP without a password, as on a CI service container.
        $SUDO grep -q "^host all all 127.0.0.1/32 trust" "$hba" || $SUDO sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
            || $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
        for _ in $(seq 100); do pg_up && break; sleep 0.1; done
    fi
    pg_up && echo "services: PostgreSQL started" || { echo "services: PostgreSQL is not available" >&2; failed=1; }
fi
if pg_up && ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null 2>&1 \
        || echo "services: cannot create the PostgreSQL database 'test'" >&2
fi

if [ "$failed" = 1 ] && [ "${CI:-}" = true ]; then exit 1; fi
exit 0

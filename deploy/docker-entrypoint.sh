#!/bin/sh
# Container entry point: bring the schema and change capture up to date, then serve.
#
#   docker run ... IMAGE                    -> ddpctl migrate --noinput, then ddpctl serve
#   docker run ... IMAGE --workers 2        -> the same, with extra `ddpctl serve` options
#   docker run ... IMAGE ddpctl tail        -> any other command, as given (no migrate)
#
# Set DDPCTL_SKIP_MIGRATE=1 when a separate release step runs `ddpctl migrate` (several
# replicas starting at once then do not all migrate).  `exec` makes ddpctl PID 1's
# replacement, so `docker stop` (SIGTERM) reaches it and it stops gracefully.
set -e

case "$1" in
    ""|-*)
        if [ "${DDPCTL_SKIP_MIGRATE:-0}" != "1" ]; then
            ddpctl migrate --noinput
        fi
        exec ddpctl serve "$@"
        ;;
    *)
        exec "$@"
        ;;
esac

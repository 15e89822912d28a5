#!/usr/bin/env bash
# A consumer with a persistent session: subscribes at QoS 1 with a fixed client id and
# clean session off, so readings published while it is away (or while the broker restarts)
# are queued by the broker and delivered when it comes back.
#
#   examples/consumer.sh [-h HOST] [-p PORT] [-t FILTER] [-c CLIENT_ID] [-n COUNT] [-5]
#
# Defaults: 127.0.0.1:1883, filter sensors/#, client id consumer-<hostname>, run forever.
# Try it: start it, stop it (Ctrl-C), run examples/sensor.sh -n 5, start it again: the five
# readings arrive. -5 uses MQTT 5 with a one-day session expiry interval.
set -euo pipefail
HOST=127.0.0.1 PORT=1883 TOPIC='sensors/#' ID="consumer-$(hostname)" COUNT="" V5=0
. "$(dirname "$0")/options.sh"
options "h:p:t:c:n:5" "$@"
needs mosquitto_sub
args=(-h "$HOST" -p "$PORT" -q 1 -t "$TOPIC" -i "$ID" -v)
if [ "$V5" = 1 ]; then
    args+=(-V mqttv5 -x 86400 -c)
else
    args+=(-c)   # clean session off: a persistent session
fi
if [ -n "$COUNT" ]; then args+=(-C "$COUNT" -W 60); fi
exec mosquitto_sub "${args[@]}"

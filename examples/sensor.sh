#!/usr/bin/env bash
# A fake sensor: publishes a JSON temperature reading every INTERVAL seconds with
# mosquitto_pub (Debian/Raspberry Pi OS package: mosquitto-clients).
#
#   examples/sensor.sh [-h HOST] [-p PORT] [-t TOPIC] [-i INTERVAL] [-n COUNT] [-5]
#
# Defaults: 127.0.0.1:1883, topic sensors/<hostname>/temperature, every 1 s, forever.
# QoS 1: each reading is acknowledged by the broker only once it is on disk. The last reading
# is retained, so a new dashboard sees the current value at once. -5 uses MQTT 5 and adds
# content type and a user property.
set -euo pipefail
HOST=127.0.0.1 PORT=1883 TOPIC="sensors/$(hostname)/temperature" INTERVAL=1 COUNT=0 V5=0
. "$(dirname "$0")/options.sh"
options "h:p:t:i:n:5" "$@"
needs mosquitto_pub
extra=()
if [ "$V5" = 1 ]; then
    extra=(-V mqttv5 -D publish content-type application/json -D publish user-property unit celsius)
fi
i=0
while [ "$COUNT" = 0 ] || [ "$i" -lt "$COUNT" ]; do
    i=$((i + 1))
    # A slowly wandering temperature, 20.0-25.0 C (no bc/python needed).
    tenths=$(( 200 + (RANDOM % 50) ))
    msg=$(printf '{"seq":%d,"ts":%d,"celsius":%d.%d}' "$i" "$(date +%s)" $((tenths / 10)) $((tenths % 10)))
    mosquitto_pub -h "$HOST" -p "$PORT" -q 1 -r -t "$TOPIC" -m "$msg" "${extra[@]}"
    echo "$TOPIC $msg"
    [ "$COUNT" != 0 ] && [ "$i" -ge "$COUNT" ] && break
    sleep "$INTERVAL"
done

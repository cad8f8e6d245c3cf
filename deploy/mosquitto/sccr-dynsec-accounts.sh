#!/bin/sh
# SCCR's service accounts on a broker with the dynamic security plugin
# (deploy/mosquitto/sccr-dynsec.conf), with the same rights deploy/mosquitto/sccr.acl
# gives them. Run once the broker is up, after `mosquitto_ctrl dynsec init`:
#
#   BROKER_ADMIN_PASSWORD=... MQTT_PASSWORD=... MQTT_API_PASSWORD=... \
#       deploy/mosquitto/sccr-dynsec-accounts.sh [mosquitto_ctrl connection options]
#
# e.g. `-h broker.local -p 1883`, or `--cafile ca.pem -h broker.local -p 8883` (keep the
# passwords off untrusted networks). The admin account is BROKER_ADMIN (default
# sccr-provisioning, the one `dynsec init` created). The variables are those of
# deploy/compose.yaml; none starts with SCCR_, which sccr reads as its configuration
# overrides. Running it again changes nothing that is already in place.
#
# Roles:
#   sccr-ingest  reads every device's telemetry, status and command acknowledgements
#                (plain or through a shared subscription $share/<group>/...), publishes
#                commands and the live bus, reads control messages
#   sccr-api     publishes commands and control messages, reads acknowledgements, device
#                status, the live bus and control messages
# Devices get nothing here: SCCR creates their clients and roles (sccr-device-<id>).
# Receiving is denied by default, as subscribing and publishing are, so an account gets
# exactly what its role names.
set -eu

: "${BROKER_ADMIN:=sccr-provisioning}"
: "${BROKER_ADMIN_PASSWORD:?set BROKER_ADMIN_PASSWORD (the dynsec admin account)}"
: "${MQTT_PASSWORD:?set MQTT_PASSWORD (the sccr-ingest account)}"
: "${MQTT_API_PASSWORD:?set MQTT_API_PASSWORD (the sccr-api account)}"

CONNECT="$*"

# `mosquitto_ctrl <connection options> -u ADMIN -P PASSWORD dynsec ARGS...`; a command that
# finds its object already there ("already exists") has nothing to do.
dynsec() {
    # shellcheck disable=SC2086 # the connection options are words
    if out=$(mosquitto_ctrl $CONNECT -u "$BROKER_ADMIN" -P "$BROKER_ADMIN_PASSWORD" dynsec "$@" 2>&1); then
        return 0
    fi
    case "$out" in
        *"already exists"*) return 0 ;;
        *) printf 'dynsec %s: %s\n' "$*" "$out" >&2; return 1 ;;
    esac
}

dynsec setDefaultACLAccess publishClientReceive deny

grant() {
    role=$1
    acltype=$2
    topic=$3
    dynsec addRoleACL "$role" "$acltype" "$topic" allow
}

# read = subscribe (plain or shared) and receive
read_topic() {
    grant "$1" subscribePattern "$2"
    grant "$1" publishClientReceive "$2"
}

dynsec createRole sccr-ingest
for suffix in telemetry status commands/ack; do
    read_topic sccr-ingest "sccr/v1/devices/+/$suffix"
    grant sccr-ingest subscribePattern "\$share/+/sccr/v1/devices/+/$suffix"
done
grant sccr-ingest publishClientSend "sccr/v1/devices/+/commands"
grant sccr-ingest publishClientSend "sccr/v1/live/events"
read_topic sccr-ingest "sccr/v1/control"

dynsec createRole sccr-api
grant sccr-api publishClientSend "sccr/v1/devices/+/commands"
read_topic sccr-api "sccr/v1/devices/+/commands/ack"
read_topic sccr-api "sccr/v1/devices/+/status"
read_topic sccr-api "sccr/v1/live/events"
read_topic sccr-api "sccr/v1/control"
grant sccr-api publishClientSend "sccr/v1/control"

for account in sccr-ingest sccr-api; do
    if [ "$account" = sccr-ingest ]; then password=$MQTT_PASSWORD; else password=$MQTT_API_PASSWORD; fi
    dynsec createClient "$account" -p "$password"
    # An account that existed keeps its roles and gets this password.
    dynsec setClientPassword "$account" "$password"
    dynsec addClientRole "$account" "$account"
done
echo "sccr-ingest and sccr-api ready"

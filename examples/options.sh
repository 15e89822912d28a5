# Sourced by the example scripts: their shared command line and the mosquitto-clients check.
# `options SPEC "$@"` reads the options named in SPEC (getopts letters) into the variables
# below; an unknown option prints the calling script's usage (its lines 2-11) and exits 2.
#   -h HOST  -p PORT  -t TOPIC (a filter for consumer.sh)  -c ID  -i INTERVAL  -n COUNT  -5 V5=1

options() {
    local spec=$1 opt
    shift
    while getopts "$spec" opt; do
        case $opt in
            h) HOST=$OPTARG ;; p) PORT=$OPTARG ;; t) TOPIC=$OPTARG ;; c) ID=$OPTARG ;;
            i) INTERVAL=$OPTARG ;; n) COUNT=$OPTARG ;; 5) V5=1 ;;
            *) sed -n '2,11p' "$0"; exit 2 ;;
        esac
    done
}

# `needs COMMAND`: exits 1 with the package to install when COMMAND is missing.
needs() {
    command -v "$1" >/dev/null || { echo "needs $1: apt-get install mosquitto-clients" >&2; exit 1; }
}

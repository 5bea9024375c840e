#!/bin/bash
# Runs INSIDE the NVMe VM (tools/nvme-vm/run-in-nvme-vm.sh): the whole conformance suite, in
# mount and block modes, over the native NVMe/TCP data plane: each rule's driver runs `serve --emulated-rds DIR --emulated-rds-nvmet
# 127.0.0.1:4420 --data-plane nvme-tcp`, so the emulator exports through the kernel target and
# the node connects through /dev/nvme-fabrics. Prints one line per rule and "N passed, M failed".
# Usage: conformance_nvme.sh CSI_CONFORMANCE_BINARY RDS_CSI_BINARY
set -uo pipefail
CONF=$1
export RDS_CSI_BIN=$2
export CONFORMANCE_DATA_PLANE=nvme-tcp CONFORMANCE_NVMET=127.0.0.1:4420
export TMPDIR=/run/conformance   # a real tmpfs: nvmet's file backend cannot use the overlay root
mkdir -p "$TMPDIR"
"$CONF" --mode both
rc=$?
left=$(grep -l 'mikrotik:pvc-' /sys/class/nvme/*/subsysnqn 2>/dev/null | wc -l)
if [ "$left" != 0 ]; then echo "FAILED - $left managed NVMe controller(s) left connected"; exit 1; fi
exit $rc

#!/bin/bash
# Runs INSIDE the NVMe VM: one test of a Rust test binary, in its in-VM mode.
# Usage: in_vm.sh TEST_BINARY TEST_NAME
set -euo pipefail
export RDS_CSI_IN_VM=1
export TMPDIR=/run/in-vm      # a real tmpfs: nvmet's file backend cannot use the overlay root
mkdir -p "$TMPDIR"
exec "$1" --exact "$2" --nocapture --test-threads 1

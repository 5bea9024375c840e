#!/bin/bash
# Runs INSIDE the NVMe VM (tools/nvme-vm/run-in-nvme-vm.sh): `rds-csi demo` with the embedded
# emulator exporting over the kernel NVMe/TCP target (nvmet) and the node connecting natively
# through /dev/nvme-fabrics, for xfs and ext4 (ext4 grows online here: the VM has every
# capability). Meanwhile a "system" disk outside the managed prefix (same vendor prefix, as a
# diskless node's root disk from the same RDS) stays connected and must survive everything.
# Usage: node_nvme.sh RDS_CSI_BINARY
set -uo pipefail
BIN=$1
W=/run/node-vm                  # a real tmpfs: nvmet's file backend cannot use the overlay root
T=/sys/kernel/config/nvmet
SYS=nqn.2000-02.com.mikrotik:nixos-vm-node
mkdir -p $W/bin
export TMPDIR=$W
pass=0; fail=0
check() { # DESCRIPTION COMMAND...
  local d=$1; shift
  if "$@"; then pass=$((pass + 1)); echo "ok - $d"; else fail=$((fail + 1)); echo "FAILED - $d"; fi
}
dev_of() { local b; for b in /sys/block/nvme*n*; do
  [[ ${b##*/} == nvme*c*n* ]] && continue
  [[ "$(cat $b/device/subsysnqn 2>/dev/null)" == "$1" ]] && { echo ${b##*/}; return; }; done; }
managed_left() { grep -l 'mikrotik:pvc-' /sys/class/nvme/*/subsysnqn 2>/dev/null | wc -l; }

# The system disk: its own subsystem and port, connected with nvme-cli like a boot disk.
truncate -s 64M $W/system.img
mkdir $T/subsystems/$SYS && echo 1 > $T/subsystems/$SYS/attr_allow_any_host
mkdir $T/subsystems/$SYS/namespaces/1
echo 1 > $T/subsystems/$SYS/namespaces/1/buffered_io
echo $W/system.img > $T/subsystems/$SYS/namespaces/1/device_path
echo 1 > $T/subsystems/$SYS/namespaces/1/enable
mkdir $T/ports/9
echo tcp > $T/ports/9/addr_trtype; echo ipv4 > $T/ports/9/addr_adrfam
echo 127.0.0.1 > $T/ports/9/addr_traddr; echo 4421 > $T/ports/9/addr_trsvcid
ln -s $T/subsystems/$SYS $T/ports/9/subsystems/$SYS
nvme connect -t tcp -a 127.0.0.1 -s 4421 -n $SYS > /dev/null
for _ in $(seq 100); do SYSDEV=$(dev_of $SYS); [[ -n "$SYSDEV" && -b /dev/$SYSDEV ]] && break; sleep 0.1; done
check "system disk connected" [ -n "$SYSDEV" ]
printf 'system-disk-marker' | dd of=/dev/$SYSDEV bs=4096 conv=sync oflag=direct status=none
system_ok() {
  [ "$(dev_of $SYS)" = "$SYSDEV" ] && [ "$(cat /sys/class/block/$SYSDEV/device/state 2>/dev/null || echo live)" = live ] \
    && [ "$(dd if=/dev/$SYSDEV bs=4096 count=1 iflag=direct status=none | head -c 18)" = system-disk-marker ]
}

# nvme-cli must not be needed: a fake one first on PATH records any call.
printf '#!/bin/sh\necho "$@" >> %s/nvme-called\nexit 1\n' $W > $W/bin/nvme && chmod +x $W/bin/nvme

for fs in xfs ext4; do
  # ext4 also runs with storage fencing: each disk allows only the publishing node's host
  # NQN (nvmet enforces it), which the node takes from the publish context.
  extra=(); [ $fs = ext4 ] && extra=(--storage-fencing)
  PATH=$W/bin:$PATH "$BIN" demo --fs-type $fs "${extra[@]}" > $W/demo-$fs.out 2>&1; rc=$?
  sed "s/^/    [$fs] /" $W/demo-$fs.out | grep -E 'data plane|NodeStage|->|error' | head -40
  check "demo ($fs) exits 0" [ $rc = 0 ]
  check "demo ($fs) attached over NVMe/TCP" grep -q 'data plane: NVMe/TCP' $W/demo-$fs.out
  check "demo ($fs) was fenced by ControllerPublishVolume" grep -q 'fenced to demo-node' $W/demo-$fs.out
  check "demo ($fs) grew the filesystem online to 2 GiB" grep -q 'device 2147483648 bytes, filesystem now' $W/demo-$fs.out
  check "demo ($fs) read the file back from the restored volume" \
    grep -A1 'read the file in the restored volume' $W/demo-$fs.out | grep -q 'hello from rds-csi'
  check "demo ($fs) left no managed NVMe subsystem connected" [ "$(managed_left)" = 0 ]
  check "system disk survived the demo ($fs): still connected, same device, data intact" system_ok
done
check "storage fencing: the node connected with the host NQN the controller allowed" \
  grep -q 'publish context: capacityBytes, hostNqn, nqn, nvmeAddress, nvmePort' $W/demo-ext4.out
check "nvme-cli was never run" [ ! -e $W/nvme-called ]
check "the system subsystem is still exported and linked" [ -L $T/ports/9/subsystems/$SYS ]
nvme disconnect -n $SYS > /dev/null 2>&1
echo "$pass passed, $fail failed"
[ $fail = 0 ]

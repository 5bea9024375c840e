#!/bin/bash
# Runs INSIDE the NVMe VM (tools/nvme-vm/run-in-nvme-vm.sh): the emulator exports a disk
# through the kernel target (--nvmet), the kernel initiator connects to it, and data must
# cross in both directions. Usage: nvmet_export.sh RDS_EMULATOR_BINARY
set -uo pipefail
BIN=$1
W=/run/emu            # a real tmpfs: nvmet's file backend cannot use the VM's overlay root
T=/sys/kernel/config/nvmet
NQN=nqn.2000-02.com.mikrotik:pvc-vm
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-00000000c0de
OTHER=nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000ff
FILE=$W/data/fs/storage-pool/csi/pvc-vm.img
mkdir -p $W
pass=0; fail=0
check() { # DESCRIPTION COMMAND...
  local d=$1; shift
  if "$@"; then pass=$((pass + 1)); echo "ok - $d"; else fail=$((fail + 1)); echo "FAILED - $d"; fi
}
ssh-keygen -q -t ed25519 -N "" -f $W/key && cp $W/key.pub $W/authorized_keys
start() {
  "$BIN" --data-dir $W/data --authorized-keys $W/authorized_keys --nvmet 127.0.0.1:4420 \
    > $W/out 2>> $W/err & EMU=$!
  for _ in $(seq 100); do grep -q '^READY$' $W/out && break; sleep 0.1; done
  PORT=$(awk '/^listen ssh/ { split($3, a, ":"); print a[2] }' $W/out)
  [[ -n "$PORT" ]] || { echo "emulator did not start:"; cat $W/err; exit 1; }
}
rsh() { ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
  -i $W/key -p "$PORT" admin@127.0.0.1 "$1"; }
dev_of() { local b; for b in /sys/block/nvme*n*; do
  [[ ${b##*/} == nvme*c*n* ]] && continue
  [[ "$(cat $b/device/subsysnqn 2>/dev/null)" == "$1" ]] && { echo ${b##*/}; return; }; done; }
wait_dev() { local d; for _ in $(seq 100); do d=$(dev_of $NQN)
  [[ -n "$d" && -b /dev/$d && "$(cat /sys/block/$d/size)" != 0 ]] && { echo $d; return 0; }; sleep 0.1; done; return 1; }
connect() { nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN --hostnqn "$1" > /dev/null 2>&1; }
disconnect() { nvme disconnect -n $NQN > /dev/null 2>&1; for _ in $(seq 50); do [[ -z "$(dev_of $NQN)" ]] && return; sleep 0.1; done; }
exported() { [[ -L $T/ports/1/subsystems/$NQN && -d $T/subsystems/$NQN ]]; }

start
check "listen line names the NVMe/TCP address" grep -q '^listen nvme-tcp 127.0.0.1:4420$' $W/out
rsh "/disk add type=file slot=pvc-vm file-path=storage-pool/csi/pvc-vm.img file-size=64M nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn=\"$NQN\""
check "exported disk is an nvmet subsystem linked to the port" exported
check "namespace is backed by the disk's file" [ "$(cat $T/subsystems/$NQN/namespaces/1/device_path)" = "$FILE" ]

printf 'written-through-the-file' | dd of=$FILE bs=1 seek=1048576 conv=notrunc status=none
check "kernel initiator connects" connect $HOSTNQN
DEV=$(wait_dev)
check "block device appears for the NQN" [ -n "$DEV" ]
check "device size is the disk size" [ "$(( $(cat /sys/block/$DEV/size) * 512 ))" = $((64 << 20)) ]
check "data written through the file reads back over NVMe/TCP" \
  [ "$(dd if=/dev/$DEV bs=1 skip=1048576 count=24 status=none)" = written-through-the-file ]
{ printf 'written-over-nvme'; head -c $((4096 - 17)) /dev/zero; } > $W/block
dd if=$W/block of=/dev/$DEV bs=4096 seek=512 oflag=direct conv=notrunc status=none
check "data written over NVMe/TCP lands in the file" \
  [ "$(dd if=$FILE bs=1 skip=$((512 * 4096)) count=17 status=none)" = written-over-nvme ]
disconnect

rsh "/disk set pvc-vm nvme-tcp-server-allow-host-name=\"$OTHER\""
check "allow list: attr_allow_any_host off" [ "$(cat $T/subsystems/$NQN/attr_allow_any_host)" = 0 ]
check "allow list: a host not on it is refused" bash -c "! nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN --hostnqn $HOSTNQN >/dev/null 2>&1"
rsh "/disk set pvc-vm nvme-tcp-server-allow-host-name=\"$HOSTNQN\""
check "allow list: replaced, it lists exactly the new host" [ "$(ls $T/subsystems/$NQN/allowed_hosts)" = "$HOSTNQN" ]
check "allow list: a listed host connects" connect $HOSTNQN
has_dev() { wait_dev > /dev/null; }
check "allow list: and sees its device" has_dev
disconnect
rsh "/disk set pvc-vm nvme-tcp-server-allow-host-name=\"\""
check "empty allow list: any host again" [ "$(cat $T/subsystems/$NQN/attr_allow_any_host)" = 1 ]

rsh "/disk set pvc-vm nvme-tcp-export=no"
check "nvme-tcp-export=no removes the subsystem" bash -c "! [ -e $T/subsystems/$NQN ]"
rsh "/disk set pvc-vm nvme-tcp-export=yes"
check "nvme-tcp-export=yes exports it again" exported

# Reboot: the emulator dies and the target's configuration is lost; on start it re-exports.
kill $EMU; wait $EMU 2>/dev/null
rm $T/ports/1/subsystems/$NQN; echo 0 > $T/subsystems/$NQN/namespaces/1/enable
rmdir $T/subsystems/$NQN/namespaces/1 $T/subsystems/$NQN $T/ports/1
start
check "after a restart every exported disk is exported again" exported
check "and still serves its data" connect $HOSTNQN
DEV=$(wait_dev)
check "data survived the restart" [ "$(dd if=/dev/$DEV bs=1 skip=1048576 count=24 status=none)" = written-through-the-file ]
disconnect

rsh "/disk remove pvc-vm"
check "/disk remove un-exports" bash -c "! [ -e $T/subsystems/$NQN ]"
check "/disk remove leaves the file" [ -f $FILE ]
kill $EMU; wait $EMU 2>/dev/null
[ $fail -eq 0 ] || { echo "---- emulator log ----"; cat $W/err; }
echo "nvmet VM test: $pass passed, $fail failed"
[ $fail -eq 0 ]

//! Replacing the Go driver in place (docs/install.md): what of its state rds-csi adopts and
//! what it refuses, with a message naming the replacement. The RDS side (slots, paths, NQNs)
//! is laid out exactly as the Go driver lays it out; its StorageClass carries every
//! parameter the Go driver accepted (inventory §3.1); its PVs carry its volume-context keys
//! (§2.7) and may hold ext3 filesystems.

mod support;

use std::{collections::HashMap, process::Command};

use support::{
    controller::{GIB, code, create, start},
    node::{self as nd, cap, root_available},
};
use tonic::Code;

/// What rds-csi does with one Go StorageClass parameter.
enum Outcome {
    Adopted,
    /// Refused (INVALID_ARGUMENT); the message contains this replacement.
    Refused(&'static str),
}

#[tokio::test(flavor = "multi_thread")]
async fn a_go_storage_class_is_adopted_key_by_key_or_refused_naming_the_replacement() {
    let (_rds, _daemon, mut c) = start("ssh").await;
    use Outcome::*;
    // Every parameter the Go driver's StorageClass accepted, with a value it took.
    let table: [(&str, &str, Outcome); 13] = [
        ("volumePath", "/storage-pool/metal-csi", Adopted),
        ("nvmePort", "4420", Adopted),
        ("nvmeAddress", "192.0.2.20", Adopted),
        ("rdsAddress", "192.0.2.10", Adopted),
        ("ctrlLossTmo", "-1", Adopted),
        ("reconnectDelay", "5", Adopted),
        ("keepAliveTmo", "0", Adopted),
        ("migrationTimeoutSeconds", "300", Adopted),
        ("csi.storage.k8s.io/fstype", "ext4", Adopted),
        ("csi.storage.k8s.io/fstype", "ext3", Refused("use ext4 or xfs")),
        ("fsType", "ext4", Refused("use csi.storage.k8s.io/fstype")),
        ("sshPort", "22", Refused("--rds-address HOST:PORT")),
        ("nqnPrefix", "nqn.2000-02.com.mikrotik:pvc-", Refused("--managed-nqn-prefix")),
    ];
    let mut report = Vec::new();
    for (i, (key, value, outcome)) in table.iter().enumerate() {
        let name = format!("pvc-60000000-0000-4000-8000-{:012}", i);
        let answer = c.create_volume(create(&name, GIB, &[(key, value)])).await;
        match outcome {
            Adopted => {
                let v = answer.unwrap_or_else(|e| panic!("{key}={value}: {e:?}"));
                let v = v.into_inner().volume.unwrap();
                assert_eq!(v.volume_id, name);
                report.push(format!("{key}={value}: adopted"));
            }
            Refused(replacement) => {
                let (k, msg) = code(answer);
                assert_eq!(k, Code::InvalidArgument, "{key}={value}: {msg}");
                assert!(msg.contains(key) && msg.contains(replacement), "{key}={value}: {msg}");
                report.push(format!("{key}={value}: refused: {msg}"));
            }
        }
    }
    // The provisioner turns csi.storage.k8s.io/fstype into the capability's fsType: ext3
    // there is refused too, naming ext4.
    let mut req = create("pvc-60000000-0000-4000-8000-0000000000ff", GIB, &[]);
    req.volume_capabilities = vec![cap(false, "ext3", &[])];
    let (k, msg) = code(c.create_volume(req).await);
    assert!(k == Code::InvalidArgument && msg.contains("use ext4"), "{k:?} {msg}");
    report.push(format!("capability fsType ext3: refused: {msg}"));
    eprintln!("Go StorageClass parameters:\n  {}", report.join("\n  "));
}

/// The volume context the Go driver wrote into its PVs (inventory §2.7): no fsType key.
fn go_context(ours: &HashMap<String, String>) -> HashMap<String, String> {
    let mut ctx: HashMap<String, String> = [
        "nvmeAddress",
        "nvmePort",
        "nqn",
        "volumePath",
        "ctrlLossTmo",
        "reconnectDelay",
        "keepAliveTmo",
        "migrationTimeoutSeconds",
    ]
    .iter()
    .filter_map(|k| Some((k.to_string(), ours.get(*k)?.clone())))
    .collect();
    ctx.insert("rdsAddress".into(), ours["nvmeAddress"].clone());
    ctx.entry("keepAliveTmo".into()).or_insert_with(|| "0".into());
    ctx
}

fn mkfs_with_file(fs: &str, file: &std::path::Path, content: &str) {
    let out = Command::new(format!("mkfs.{fs}")).args(["-q", "-F"]).arg(file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let mnt = |args: &[&str]| assert!(Command::new("mount").args(args).status().unwrap().success());
    mnt(&["-o", "loop", &file.display().to_string(), &dir.path().display().to_string()]);
    std::fs::write(dir.path().join("made-by-go"), content).unwrap();
    assert!(Command::new("umount").arg(dir.path()).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn go_volumes_stage_from_their_volume_context_ext3_included_and_a_blank_ext3_is_refused() {
    if !root_available() {
        return;
    }
    let mut node = nd::start(&[]).await;
    for fs in ["ext4", "ext3"] {
        let mut v = node.create(&format!("pvc-go-{fs}"), false).await;
        v.ctx = go_context(&v.ctx);
        mkfs_with_file(fs, &v.file, fs);
        node.stage(&v, cap(false, fs, &[])).await.unwrap_or_else(|e| panic!("{fs}: {e:?}"));
        let staging = node.staging(&v);
        assert_eq!(std::fs::read_to_string(staging.join("made-by-go")).unwrap(), fs);
        let mounted = nd::mounts_at(&staging);
        assert_eq!(mounted.last().map(|m| m.fs_type.as_str()), Some(fs));
        node.stage(&v, cap(false, fs, &[])).await.unwrap(); // idempotent
        node.unstage(&v).await.unwrap();
    }
    // A blank volume asked for as ext3: never formatted as ext3 (nor at all).
    let mut blank = node.create("pvc-go-blank", false).await;
    blank.ctx = go_context(&blank.ctx);
    let (k, msg) = nd::code(node.stage(&blank, cap(false, "ext3", &[])).await);
    assert_eq!(k, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("never creates one") && msg.contains("Use ext4"), "{msg}");
    assert_eq!(nd::blkid(&blank.file, "TYPE"), "", "still blank");
}

//! Volumes in their own btrfs subvolume (StorageClass `layout: subvolume`), black-box: the real
//! `rds-csi` binary against the RDS emulator, whose btrfs pool is a real btrfs filesystem
//! (mkfs.btrfs on a loop file) where `/disk/btrfs/subvolume` makes real subvolumes and
//! snapshots (docs/snapshots.md "btrfs"). Needs root and btrfs-progs (.ci/run installs them);
//! outside CI it prints why it skips.

mod support;

use std::{
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use csi::v1::{controller_client::ControllerClient, volume_capability::access_mode::Mode, *};
use support::{Daemon, cap, controller::*, rds::rds};
use tonic::{Code, transport::Channel};

const A: &str = "pvc-b7f50000-0000-4000-8000-00000000000a";
const B: &str = "pvc-b7f50000-0000-4000-8000-00000000000b";
const C: &str = "pvc-b7f50000-0000-4000-8000-00000000000c";
const D: &str = "pvc-b7f50000-0000-4000-8000-00000000000d";
const POOL: &str = "btrfs-pool";

fn btrfs_available() -> bool {
    support::root_with(
        &["mkfs.btrfs", "btrfs", "mount"],
        "a loop-mounted btrfs filesystem",
        "btrfs",
    )
}

/// The btrfs filesystem mounted on the emulator's pool directory; unmounted on drop.
struct Mounted {
    at: PathBuf,
    _image: tempfile::TempDir,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

async fn start(transport: &str) -> (support::rds::Rds, Daemon, ControllerClient<Channel>, Mounted) {
    let rds = rds().await;
    let image = tempfile::tempdir().unwrap();
    let file = image.path().join("btrfs.img");
    std::fs::File::create(&file).unwrap().set_len(1 << 30).unwrap();
    run(Command::new("mkfs.btrfs").arg("-q").arg(&file));
    let at = rds.emu.with_store(|s| {
        // RouterOS-side size: the emulator counts logical file sizes, which snapshots share.
        s.add_btrfs_pool(POOL, 64 << 30).unwrap();
        s.host_path(POOL)
    });
    run(Command::new("mount").arg("-o").arg("loop").arg(&file).arg(&at));
    let mounted = Mounted { at, _image: image };
    let allowed = format!("--allowed-base-path=/{POOL}");
    let flags = ["--allowed-base-path=/storage-pool/metal-csi", &allowed, "--known-node-id=node-a"];
    let (rds, daemon, c) = start_with_flags(rds, transport, &flags).await;
    (rds, daemon, c, mounted)
}

fn sub(pool: &Mounted, name: &str) -> PathBuf {
    pool.at.join(name)
}

/// `btrfs subvolume show` succeeds: a real subvolume (not a directory).
fn is_subvolume(p: &Path) -> bool {
    Command::new("btrfs")
        .args(["subvolume", "show"])
        .arg(p)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn read_only(p: &Path) -> bool {
    let out =
        Command::new("btrfs").args(["property", "get", "-ts"]).arg(p).arg("ro").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "ro=true"
}

fn subvolume_req(name: &str, bytes: i64) -> CreateVolumeRequest {
    create(name, bytes, &[("volumePath", "/btrfs-pool"), ("layout", "subvolume")])
}

fn with_source(
    req: CreateVolumeRequest,
    source: volume_content_source::Type,
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        volume_content_source: Some(VolumeContentSource { r#type: Some(source) }),
        ..req
    }
}

async fn until_created(c: &mut ControllerClient<Channel>, req: CreateVolumeRequest) -> Vec<Code> {
    let mut answers = Vec::new();
    for _ in 0..200 {
        match c.create_volume(req.clone()).await {
            Ok(_) => return answers,
            Err(s) => answers.push(s.code()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never created: {answers:?}", req.name);
}

/// Sequence-numbered 4 KiB records written to `file` (pwrite + fdatasync each) by a thread.
struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<u64>,
}

const BLOCKS: u64 = 1 << 14;

fn position(i: u64) -> u64 {
    (i * 7919) % BLOCKS
}

fn writer(file: PathBuf) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (s, d) = (stop.clone(), done.clone());
    let handle = std::thread::spawn(move || {
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        let mut i = 0u64;
        while !s.load(Ordering::Relaxed) {
            i += 1;
            let mut b = vec![0u8; 4096];
            b[..8].copy_from_slice(b"BTRFSPIT");
            b[8..16].copy_from_slice(&i.to_le_bytes());
            f.write_all_at(&b, position(i) * 4096).unwrap();
            f.sync_data().unwrap();
            d.store(i, Ordering::SeqCst);
        }
        i
    });
    Writer { stop, done, handle }
}

/// The records in `file`: must be exactly 1..=k.
fn prefix(file: &Path) -> Option<u64> {
    let f = std::fs::File::open(file).unwrap();
    let mut seqs = Vec::new();
    let mut b = vec![0u8; 4096];
    for block in 0..BLOCKS {
        f.read_exact_at(&mut b, block * 4096).unwrap();
        if &b[..8] == b"BTRFSPIT" {
            let i = u64::from_le_bytes(b[8..16].try_into().unwrap());
            assert_eq!(position(i), block);
            seqs.push(i);
        }
    }
    seqs.sort();
    seqs.iter().enumerate().all(|(k, i)| *i == k as u64 + 1).then_some(seqs.len() as u64)
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_in_subvolumes_snapshot_as_btrfs_snapshots_over_ssh() {
    drill("ssh").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_in_subvolumes_snapshot_as_btrfs_snapshots_over_rest() {
    drill("rest").await;
}

async fn drill(transport: &str) {
    if !btrfs_available() {
        return;
    }
    let (rds, _daemon, mut c, pool) = start(transport).await;

    // A volume in its own subvolume.
    c.create_volume(subvolume_req(A, GIB)).await.unwrap();
    let a_file = format!("{POOL}/{A}/{A}.img");
    assert!(rds.file_exists(&a_file), "the image in the subvolume");
    assert!(is_subvolume(&sub(&pool, A)), "a real subvolume");
    c.create_volume(subvolume_req(A, GIB)).await.expect("idempotent");
    write_at(&rds, &a_file, 0, b"BEFORE");

    // The default snapshot of it is a read-only btrfs snapshot, ready at once.
    let s = c
        .create_snapshot(snap_req("btrfs-1", A, &[]))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(s.ready_to_use, "{s:?}");
    let s_file = format!("{POOL}/{}/{A}.img", s.snapshot_id);
    assert!(is_subvolume(&sub(&pool, &s.snapshot_id)) && read_only(&sub(&pool, &s.snapshot_id)));
    assert_eq!(read_at(&rds, &s_file, 0, 6), b"BEFORE");
    write_at(&rds, &a_file, 0, b"AFTER!");
    assert_eq!(
        read_at(&rds, &s_file, 0, 6),
        b"BEFORE",
        "copy-on-write: the snapshot keeps its instant"
    );
    let again = c
        .create_snapshot(snap_req("btrfs-1", A, &[]))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(again.snapshot_id, s.snapshot_id, "idempotent");
    assert!(!rds.commands().iter().any(|c| c.contains("/disk copy")), "nothing copied");

    // One instant under a writer, without holding any write (even published).
    c.controller_publish_volume(ControllerPublishVolumeRequest {
        volume_id: A.into(),
        node_id: "node-a".into(),
        volume_capability: Some(cap(false, Mode::SingleNodeWriter)),
        ..Default::default()
    })
    .await
    .unwrap();
    let w = writer(rds.emu.with_store(|s| s.host_path(&a_file)));
    while w.done.load(Ordering::SeqCst) < 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let asked = w.done.load(Ordering::SeqCst);
    let under = c
        .create_snapshot(snap_req("btrfs-live", A, &[]))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let ready = w.done.load(Ordering::SeqCst);
    while w.done.load(Ordering::SeqCst) < ready + 100 {
        std::thread::sleep(Duration::from_millis(5));
    }
    w.stop.store(true, Ordering::Relaxed);
    let written = w.handle.join().unwrap();
    let k = prefix(
        &rds.emu.with_store(|s| s.host_path(&format!("{POOL}/{}/{A}.img", under.snapshot_id))),
    )
    .expect("a gap-free prefix of the writes");
    assert!(asked <= k && k <= ready + 1, "{asked} <= {k} <= {ready} + 1 ({written} written)");
    assert!(
        !rds.commands().iter().any(|c| c.contains("nvme-tcp-export=no")),
        "no write held for a btrfs snapshot"
    );

    // A restore into a subvolume is a writable snapshot: no copy, no ABORTED.
    let from_snap = volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
        snapshot_id: s.snapshot_id.clone(),
    });
    let req = with_source(subvolume_req(B, 2 * GIB), from_snap.clone());
    let v = c.create_volume(req).await.unwrap().into_inner().volume.unwrap();
    assert_eq!(v.capacity_bytes, 2 * GIB, "grown to the request");
    let b_file = format!("{POOL}/{B}/{A}.img");
    assert!(is_subvolume(&sub(&pool, B)) && !read_only(&sub(&pool, B)));
    assert_eq!(read_at(&rds, &b_file, 0, 6), b"BEFORE");
    write_at(&rds, &b_file, 0, b"B-OWN!");
    assert_eq!(read_at(&rds, &s_file, 0, 6), b"BEFORE", "the snapshot is untouched");

    // A clone of a volume in a subvolume is a writable snapshot of it.
    let of_a = volume_content_source::Type::Volume(volume_content_source::VolumeSource {
        volume_id: A.into(),
    });
    let req = with_source(subvolume_req(C, GIB), of_a);
    assert_eq!(until_created(&mut c, req).await, Vec::<Code>::new(), "at once");
    assert_eq!(read_at(&rds, &format!("{POOL}/{C}/{A}.img"), 0, 6), b"AFTER!");

    // A restore into the file layout is filled by a copy of the snapshot's image.
    let req = from_source(D, GIB, from_snap);
    let answers = until_created(&mut c, req).await;
    assert!(answers.iter().all(|c| *c == Code::Aborted), "{answers:?}");
    assert_eq!(read_at(&rds, &format!("storage-pool/metal-csi/{D}.img"), 0, 6), b"BEFORE");

    // Refusals that name the fix.
    let e = c.create_snapshot(snap_req("wrong", D, &[("mechanism", "btrfs")])).await.unwrap_err();
    assert!(
        e.code() == Code::InvalidArgument && e.message().contains("layout: subvolume"),
        "{e:?}"
    );
    let e = c
        .create_volume(create(
            "pvc-b7f50000-0000-4000-8000-0000000000ee",
            GIB,
            &[("layout", "subvolume")],
        ))
        .await
        .unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("btrfs pool"), "{e:?}");

    // Deletes take the subvolumes along; what was made from them stays.
    for snap in [&s.snapshot_id, &under.snapshot_id] {
        c.delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: snap.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(!sub(&pool, snap).exists(), "{snap} removed");
    }
    assert_eq!(read_at(&rds, &b_file, 0, 6), b"B-OWN!");
    c.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: A.into(),
        node_id: "node-a".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    for v in [A, B, C, D] {
        c.delete_volume(DeleteVolumeRequest { volume_id: v.into(), ..Default::default() })
            .await
            .unwrap();
        assert!(!sub(&pool, v).exists(), "{v}'s subvolume removed");
    }
    let left = rds.ros(":put [:serialize to=json [/disk/btrfs/subvolume print as-value]]");
    assert_eq!(left.trim(), "[]", "no subvolume left: {left}");
}

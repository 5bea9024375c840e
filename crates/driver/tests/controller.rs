//! The Controller service over gRPC, black-box: the real `rds-csi` binary against the RDS
//! emulator over real SSH, and the same suite over REST (HTTPS with a pinned certificate).

mod support;

use std::{collections::HashMap, time::Duration};

use csi::v1::{volume_capability::access_mode::Mode, *};
use rds_emulator::emulator::{DropRule, DropWhen, Faults};
use support::{
    cap,
    controller::*,
    rds::{POOL, Rds},
};
use tonic::Code;

async fn suite(transport: &str) {
    let (rds, daemon, mut c) = start(transport).await;

    // Capabilities: exactly what works.
    let caps: Vec<i32> = c
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .into_iter()
        .filter_map(|c| c.r#type.map(|controller_service_capability::Type::Rpc(r)| r.r#type))
        .collect();
    use controller_service_capability::rpc::Type as T;
    let works = [
        T::CreateDeleteVolume,
        T::PublishUnpublishVolume,
        T::ListVolumes,
        T::GetCapacity,
        T::ExpandVolume,
        T::GetVolume,
        T::VolumeCondition,
        T::SingleNodeMultiWriter,
        T::CreateDeleteSnapshot,
        T::ListSnapshots,
        T::CloneVolume,
        T::PublishReadonly,
        T::ListVolumesPublishedNodes,
        T::GetSnapshot,
        T::ModifyVolume,
    ];
    for t in works {
        assert!(caps.contains(&(t as i32)), "{t:?} advertised");
    }
    assert_eq!(caps.len(), works.len(), "nothing else is advertised");

    // CreateVolume: the provisioner's name is the slot; one round trip (the add and its
    // confirming read in one command line, or one PUT).
    let name = "pvc-0f8e4b1c-2a3d-4e5f-9a8b-7c6d5e4f3a2b";
    let params = [
        ("volumePath", "/storage-pool/metal-csi"),
        ("nvmeAddress", "10.0.0.5"),
        ("csi.storage.k8s.io/pvc/name", "data"),
        ("csi.storage.k8s.io/pvc/namespace", "apps"),
    ];
    let (resp, trips) = counted(&rds, c.create_volume(create(name, 10 * GIB, &params))).await;
    let v = resp.unwrap().into_inner().volume.unwrap();
    assert_eq!(trips, 1, "create took {trips} round trips: {:?}", rds.commands());
    assert_eq!((v.volume_id.as_str(), v.capacity_bytes), (name, 10 * GIB));
    let ctx = &v.volume_context;
    assert_eq!(ctx["nqn"], format!("nqn.2000-02.com.mikrotik:{name}"));
    assert_eq!(ctx["volumePath"], format!("/storage-pool/metal-csi/{name}.img"));
    assert_eq!((ctx["nvmeAddress"].as_str(), ctx["nvmePort"].as_str()), ("10.0.0.5", "4420"));
    assert_eq!(
        (
            ctx["ctrlLossTmo"].as_str(),
            ctx["reconnectDelay"].as_str(),
            ctx["migrationTimeoutSeconds"].as_str()
        ),
        ("-1", "5", "300")
    );
    assert_eq!(ctx["csi.storage.k8s.io/pvc/name"], "data");
    assert_eq!(v.accessible_topology[0].segments["topology.rds.csi.srvlab.io/zone"], "default");
    assert!(rds.file_exists(&format!("storage-pool/metal-csi/{name}.img")));
    let disk =
        rds.ros(&format!(":put [:serialize to=json [/disk print as-value where slot=\"{name}\"]]"));
    assert!(
        disk.contains("\"nvme-tcp-export\":true")
            && disk.contains("\"comment\":\"rds-csi pvc=apps/data created="),
        "{disk}"
    );

    // Idempotent: the same request returns the same volume. Its add is refused (the slot
    // is taken) and one look finds the disk: 2 round trips, and the disk is unchanged.
    let (again, trips) = counted(&rds, c.create_volume(create(name, 10 * GIB, &params))).await;
    let again = again.unwrap().into_inner().volume.unwrap();
    assert_eq!(again.volume_id, v.volume_id);
    assert_eq!(trips, 2, "a retried create: {:?}", rds.commands());
    assert_eq!(
        rds.ros(&format!(":put [:serialize to=json [/disk print as-value where slot=\"{name}\"]]")),
        disk,
        "the refused add changed nothing"
    );
    let (code_, msg) = code(c.create_volume(create(name, 20 * GIB, &params)).await);
    assert_eq!(code_, Code::AlreadyExists, "{msg}");
    assert!(msg.contains("does not fit the requested range"), "{msg}");

    // Other names map to a deterministic pvc-<uuid>, the name kept in the comment.
    let derived = c
        .create_volume(create("sanity volume 1", GIB, &[]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert!(derived.volume_id.starts_with("pvc-") && derived.volume_id != "sanity volume 1");
    let again = c
        .create_volume(create("sanity volume 1", GIB, &[]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(derived.volume_id, again.volume_id);

    // Bad input: the right code and a message that says how to fix it.
    let (k, m) = code(c.create_volume(create("", GIB, &[])).await);
    assert_eq!((k, m.as_str()), (Code::InvalidArgument, "name is required"));
    let mut rwx = create("pvc-rwx", GIB, &[]);
    rwx.volume_capabilities = vec![cap(false, Mode::MultiNodeMultiWriter)];
    let (k, m) = code(c.create_volume(rwx).await);
    assert!(k == Code::InvalidArgument && m.contains("volumeMode: Block"), "{m}");
    let mut rwx_block = create("pvc-rwx-block", GIB, &[]);
    rwx_block.volume_capabilities = vec![cap(true, Mode::MultiNodeMultiWriter)];
    assert!(c.create_volume(rwx_block).await.is_ok(), "RWX block is allowed (KubeVirt)");
    let (k, m) = code(c.create_volume(create("pvc-p", GIB, &[("colour", "blue")])).await);
    assert!(
        k == Code::InvalidArgument && m.contains("\"colour\"") && m.contains("accepted:"),
        "{m}"
    );
    let (k, m) = code(c.create_volume(create("pvc-p", GIB, &[("volumePath", "/etc")])).await);
    assert!(k == Code::InvalidArgument && m.contains("outside the allowed base paths"), "{m}");
    let mut small = create("pvc-small", GIB, &[]);
    small.capacity_range = Some(CapacityRange { required_bytes: 0, limit_bytes: 1000 });
    assert_eq!(code(c.create_volume(small).await).0, Code::OutOfRange);
    let (k, m) = code(c.create_volume(create("pvc-huge", 200 * GIB, &[])).await);
    assert!(k == Code::ResourceExhausted && m.contains("not enough"), "{k:?} {m}");

    // GetCapacity: the pool's free space.
    let capacity = c.get_capacity(GetCapacityRequest::default()).await.unwrap().into_inner();
    let used = 10 * GIB + 2 * GIB; // pvc 10 GiB, the derived and RWX-block volumes 1 GiB each
    assert_eq!(capacity.available_capacity, POOL as i64 - used);
    assert_eq!(capacity.maximum_volume_size, Some(POOL as i64 - used));
    assert_eq!(capacity.minimum_volume_size, Some(GIB));

    // ListVolumes: pagination with stable tokens; a bad token is ABORTED.
    let page = c
        .list_volumes(ListVolumesRequest { max_entries: 2, starting_token: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entries.len(), 2);
    assert!(!page.next_token.is_empty());
    let rest_page = c
        .list_volumes(ListVolumesRequest {
            max_entries: 2,
            starting_token: page.next_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest_page.entries.len(), 1);
    assert!(rest_page.next_token.is_empty());
    let all: Vec<String> = page
        .entries
        .iter()
        .chain(&rest_page.entries)
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    assert!(all.contains(&name.to_string()));
    let (k, _) = code(
        c.list_volumes(ListVolumesRequest { max_entries: 1, starting_token: "not/a/token".into() })
            .await,
    );
    assert_eq!(k, Code::Aborted);

    // ValidateVolumeCapabilities.
    let ok = c
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: name.into(),
            volume_capabilities: vec![cap(true, Mode::SingleNodeWriter)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some());
    let no = c
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: name.into(),
            volume_capabilities: vec![cap(false, Mode::MultiNodeReaderOnly)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(no.confirmed.is_none() && no.message.contains("not supported"), "{no:?}");
    let unknown = ValidateVolumeCapabilitiesRequest {
        volume_id: "pvc-none".into(),
        volume_capabilities: vec![cap(true, Mode::SingleNodeWriter)],
        ..Default::default()
    };
    assert_eq!(code(c.validate_volume_capabilities(unknown).await).0, Code::NotFound);

    // ControllerExpandVolume: grows, re-reads the exact size, node expansion for filesystems.
    let grow = |block: bool, bytes: i64| ControllerExpandVolumeRequest {
        volume_id: name.into(),
        capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        volume_capability: Some(cap(block, Mode::SingleNodeWriter)),
        ..Default::default()
    };
    let grown = c.controller_expand_volume(grow(false, 20 * GIB)).await.unwrap().into_inner();
    assert_eq!((grown.capacity_bytes, grown.node_expansion_required), (20 * GIB, true));
    let same = c.controller_expand_volume(grow(true, 15 * GIB)).await.unwrap().into_inner();
    assert_eq!(
        (same.capacity_bytes, same.node_expansion_required),
        (20 * GIB, false),
        "never shrinks; block needs no node step"
    );
    assert_eq!(
        rds.emu.with_store(|s| s.file_len(&format!("storage-pool/metal-csi/{name}.img"))),
        Some(20 << 30)
    );
    let missing = ControllerExpandVolumeRequest {
        volume_id: "pvc-none".into(),
        capacity_range: Some(CapacityRange { required_bytes: GIB, limit_bytes: 0 }),
        ..Default::default()
    };
    assert_eq!(code(c.controller_expand_volume(missing).await).0, Code::NotFound);

    // ControllerGetVolume: healthy, then abnormal when the export or the file is missing.
    let get = |id: &str| ControllerGetVolumeRequest { volume_id: id.into() };
    let healthy = c.controller_get_volume(get(name)).await.unwrap().into_inner();
    let condition = healthy.status.unwrap().volume_condition.unwrap();
    assert!(!condition.abnormal, "{condition:?}");
    rds.ros(&format!("/disk set \"{name}\" nvme-tcp-export=no"));
    let sick = c
        .controller_get_volume(get(name))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .volume_condition
        .unwrap();
    assert!(sick.abnormal && sick.message.contains("not exported"), "{sick:?}");
    rds.ros(&format!("/disk set \"{name}\" nvme-tcp-export=yes"));
    assert_eq!(code(c.controller_get_volume(get("pvc-none")).await).0, Code::NotFound);

    // DeleteVolume: disk and file gone, ≤ 2 round trips, idempotent.
    let del = |id: &str| DeleteVolumeRequest { volume_id: id.into(), ..Default::default() };
    let (r, trips) = counted(&rds, c.delete_volume(del(name))).await;
    r.unwrap();
    // Look + one joined remove line (over REST through /rest/execute).
    assert_eq!(trips, 1, "delete took {trips} round trips over {transport}: {:?}", rds.commands());
    assert!(!rds.file_exists(&format!("storage-pool/metal-csi/{name}.img")));
    assert!(c.delete_volume(del(name)).await.is_ok(), "deleting a deleted volume succeeds");
    // A crash between the disk's and the file's removal left the file: the same one line
    // removes it (in a subdirectory too), and nothing else.
    let left = "pvc-1e000000-0000-4000-8000-00000000001e";
    rds.ros(&format!(
        "/disk add type=file slot={left} file-path=storage-pool/metal-csi/{left}.img file-size=1M"
    ));
    rds.ros(&format!("/disk add type=file slot=keep-me file-path=storage-pool/metal-csi/keep-{left}.img file-size=1M"));
    rds.ros(&format!("/disk remove [find slot={left}]"));
    let (r, trips) = counted(&rds, c.delete_volume(del(left))).await;
    r.unwrap();
    assert_eq!(trips, 1, "a leftover file: {:?}", rds.commands());
    assert!(!rds.file_exists(&format!("storage-pool/metal-csi/{left}.img")));
    assert!(rds.file_exists(&format!("storage-pool/metal-csi/keep-{left}.img")), "only <id>.img");
    assert_eq!(code(c.delete_volume(del("")).await).0, Code::InvalidArgument);
    // An id this driver never makes names no volume of it: OK, and nothing is touched.
    rds.ros("/disk add type=file slot=pvc-foreign file-path=storage-pool/metal-csi/pvc-foreign.img file-size=1M");
    let before = rds.commands().len();
    c.delete_volume(del("pvc-foreign")).await.expect("not ours: nothing to delete");
    assert_eq!(rds.commands().len(), before, "no RouterOS command for a foreign id");
    assert!(rds.file_exists("storage-pool/metal-csi/pvc-foreign.img"));

    // A disk whose file is outside the allowed base paths is never deleted.
    let outside = "pvc-f0000000-0000-4000-8000-00000000000f";
    rds.ros(&format!(
        "/disk add type=file slot={outside} file-path=storage-pool/other/{outside}.img file-size=1M"
    ));
    let (k, m) = code(c.delete_volume(del(outside)).await);
    assert!(k == Code::FailedPrecondition && m.contains("outside the allowed base paths"), "{m}");
    assert!(rds.file_exists(&format!("storage-pool/other/{outside}.img")));
    // Also when a stray `<id>.img` lies under the allowed base path: the one-line delete
    // sees the disk is not the plain case and removes nothing at all.
    rds.ros(&format!(
        "/disk add type=file slot=stray file-path=storage-pool/metal-csi/{outside}.img file-size=1M"
    ));
    let (k, _) = code(c.delete_volume(del(outside)).await);
    assert_eq!(k, Code::FailedPrecondition);
    assert!(rds.file_exists(&format!("storage-pool/metal-csi/{outside}.img")));
    assert!(rds.file_exists(&format!("storage-pool/other/{outside}.img")));

    // The per-RPC round-trip metric agrees: every CreateVolume took at most 2 (1 when new).
    let (count, within) = round_trip_metric(&daemon, "CreateVolume", "2.0");
    assert!(
        count >= 5 && within == count,
        "CreateVolume round trips: {within} of {count} within 2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_over_ssh() {
    suite("ssh").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_over_rest() {
    suite("rest").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_whose_answer_is_lost_leaves_exactly_one_disk() {
    for when in [DropWhen::Before, DropWhen::After] {
        let (rds, _daemon, mut c) = start("ssh").await;
        rds.emu
            .set_faults(Faults {
                drop: vec![DropRule { pattern: "^/disk add".into(), nth: 1, when }],
                ..Faults::default()
            })
            .unwrap();
        let name = "pvc-11111111-2222-3333-4444-555555555555";
        let v = c.create_volume(create(name, GIB, &[])).await.unwrap().into_inner().volume.unwrap();
        assert_eq!(v.capacity_bytes, GIB, "{when:?}");
        let count = rds.ros(&format!("/disk print count-only where slot=\"{name}\""));
        assert_eq!(count.trim(), "1", "{when:?}: exactly one disk");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_call_on_the_same_volume_is_aborted() {
    let (rds, _daemon, c) = start("ssh").await;
    rds.emu.set_faults(Faults { latency_ms: 600, ..Faults::default() }).unwrap();
    let name = "pvc-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    let (mut a, mut b) = (c.clone(), c.clone());
    let first = tokio::spawn(async move { a.create_volume(create(name, GIB, &[])).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = b.create_volume(create(name, GIB, &[])).await;
    assert_eq!(code(second).0, Code::Aborted);
    assert!(first.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_of_the_go_driver_are_managed() {
    let (rds, _daemon, mut c) = start("ssh").await;
    // Laid out exactly as the Go driver does (inventory §1.2 C1, §2.6): slot = volume id,
    // file <volumePath>/<id>.img, NQN prefix + id, exported on 4420, no comment.
    let id = "pvc-9b2f0c4e-1d2a-4b3c-8d4e-5f6a7b8c9d0e";
    rds.ros(&format!(
        "/disk add type=file file-path=/storage-pool/metal-csi/{id}.img file-size=5G slot={id} nvme-tcp-export=yes \
         nvme-tcp-server-port=4420 nvme-tcp-server-nqn=nqn.2000-02.com.mikrotik:{id}"
    ));
    let listed = c.list_volumes(ListVolumesRequest::default()).await.unwrap().into_inner();
    let v = listed
        .entries
        .iter()
        .find_map(|e| e.volume.as_ref().filter(|v| v.volume_id == id))
        .expect("listed");
    assert_eq!(v.capacity_bytes, 5 * GIB);
    assert_eq!(v.volume_context["nqn"], format!("nqn.2000-02.com.mikrotik:{id}"));
    let created =
        c.create_volume(create(id, 5 * GIB, &[])).await.unwrap().into_inner().volume.unwrap();
    assert_eq!(
        created.capacity_bytes,
        5 * GIB,
        "CreateVolume finds it (external-provisioner retry)"
    );
    let grown = c
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: id.into(),
            capacity_range: Some(CapacityRange { required_bytes: 8 * GIB, limit_bytes: 0 }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, 8 * GIB);
    c.delete_volume(DeleteVolumeRequest { volume_id: id.into(), secrets: HashMap::new() })
        .await
        .unwrap();
    assert!(!rds.file_exists(&format!("storage-pool/metal-csi/{id}.img")));
    assert_eq!(rds.ros(&format!("/disk print count-only where slot={id}")).trim(), "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn emulator_faults_map_to_codes_without_leaks() {
    let (rds, _daemon, mut c) = start("ssh").await;
    let count = |rds: &Rds, slot: &str| {
        rds.ros(&format!("/disk print count-only where slot=\"{slot}\"")).trim().to_string()
    };

    // Disk full: RESOURCE_EXHAUSTED, and neither a disk nor a file is left behind.
    rds.emu.set_faults(Faults { disk_full: true, ..Faults::default() }).unwrap();
    let full = "pvc-e0000000-0000-4000-8000-000000000001";
    let (k, m) = code(c.create_volume(create(full, GIB, &[])).await);
    assert!(k == Code::ResourceExhausted && m.contains("not enough disk space"), "{k:?} {m}");
    assert_eq!(count(&rds, full), "0");
    assert!(!rds.file_exists(&format!("storage-pool/metal-csi/{full}.img")));

    // A RouterOS failure the driver does not expect: INTERNAL, with RouterOS's text.
    rds.emu
        .set_faults(Faults {
            fail: vec![rds_emulator::emulator::FailRule {
                pattern: "^/disk add".into(),
                nth: 1,
                error: "failure: device busy".into(),
            }],
            ..Faults::default()
        })
        .unwrap();
    let (k, m) = code(c.create_volume(create(full, GIB, &[])).await);
    assert!(k == Code::Internal && m.contains("failure: device busy"), "{k:?} {m}");

    // A reboot during a create: the client reconnects and the volume is made exactly once.
    rds.emu.set_faults(Faults::default()).unwrap();
    rds.emu.reboot(Duration::from_millis(1500));
    let v = c.create_volume(create(full, GIB, &[])).await.unwrap().into_inner().volume.unwrap();
    assert_eq!(v.capacity_bytes, GIB);
    assert_eq!(count(&rds, full), "1");

    // New sessions refused while the live connection keeps working.
    rds.emu.set_faults(Faults { refuse_sessions: true, ..Faults::default() }).unwrap();
    let listed = c.list_volumes(ListVolumesRequest::default()).await.unwrap().into_inner();
    assert!(listed.entries.iter().any(|e| e.volume.as_ref().is_some_and(|v| v.volume_id == full)));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_rpc_finish() {
    let (rds, mut daemon, c) = start("ssh").await;
    // Each RouterOS command now takes 1.5 s: CreateVolume (look + create) is in flight for ~3 s.
    rds.emu.set_faults(Faults { latency_ms: 1500, ..Faults::default() }).unwrap();
    let name = "pvc-51651651-0000-4000-8000-000000000001";
    let mut client = c.clone();
    let call = tokio::spawn(async move { client.create_volume(create(name, GIB, &[])).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    daemon.signal(libc::SIGTERM);
    let answer = call.await.unwrap();
    assert!(answer.is_ok(), "the in-flight RPC completed: {answer:?}");
    let status = daemon.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    assert!(!daemon.socket.exists(), "socket removed after the drain");
    assert_eq!(rds.ros(&format!("/disk print count-only where slot=\"{name}\"")).trim(), "1");
}

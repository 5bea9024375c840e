//! CSI "CreateVolume" (error table: source does not exist NOT_FOUND; volume already exists but
//! is incompatible ALREADY_EXISTS; unsupported capacity_range OUT_OF_RANGE; required fields
//! INVALID_ARGUMENT) and its idempotency rule.

use std::os::unix::fs::FileExt;

use csi::v1::{
    volume_capability::access_mode::Mode as Am,
    volume_content_source::{SnapshotSource, Type, VolumeSource},
    *,
};
use tonic::Code;

use crate::harness::{Ctx, GIB, expect_code};

/// CSI: "name ... This field is REQUIRED" → INVALID_ARGUMENT.
pub async fn create_requires_name(c: &mut Ctx) {
    let req = CreateVolumeRequest { name: String::new(), ..c.create_req("x") };
    let msg = expect_code(
        c.c.create_volume(req).await,
        Code::InvalidArgument,
        "CreateVolume without a name",
    );
    assert!(msg.contains("name"), "{msg}");
}

/// CSI: "volume_capabilities ... This field is REQUIRED" → INVALID_ARGUMENT.
pub async fn create_requires_capabilities(c: &mut Ctx) {
    let req = CreateVolumeRequest {
        volume_capabilities: Vec::new(),
        ..c.create_req("pvc-conformance-nocap")
    };
    let msg = expect_code(
        c.c.create_volume(req).await,
        Code::InvalidArgument,
        "CreateVolume without capabilities",
    );
    assert!(msg.contains("volume_capabilities"), "{msg}");
}

/// A capability the plugin cannot provide (MULTI_NODE_SINGLE_WRITER) → INVALID_ARGUMENT,
/// and nothing is created.
pub async fn create_unsupported_capability(c: &mut Ctx) {
    let req = CreateVolumeRequest {
        volume_capabilities: vec![c.cap_with(Am::MultiNodeSingleWriter)],
        ..c.create_req("pvc-conformance-unsupported")
    };
    expect_code(c.c.create_volume(req).await, Code::InvalidArgument, "unsupported access mode");
    let list = c.c.list_volumes(ListVolumesRequest::default()).await.unwrap().into_inner();
    assert!(list.entries.is_empty(), "nothing was created: {:?}", list.entries);
}

/// CSI: capacity_range is OPTIONAL; without it the plugin chooses a size.
pub async fn create_without_capacity(c: &mut Ctx) {
    let req =
        CreateVolumeRequest { capacity_range: None, ..c.create_req("conformance-no-capacity") };
    let v = c.create_with(req).await;
    assert!(v.capacity_bytes > 0, "{v:?}");
    assert!(!v.volume_id.is_empty());
}

/// CSI "capacity_range": at least required_bytes, at most limit_bytes.
pub async fn create_within_capacity_range(c: &mut Ctx) {
    let req = CreateVolumeRequest {
        capacity_range: Some(CapacityRange { required_bytes: GIB + 4096, limit_bytes: 2 * GIB }),
        ..c.create_req("conformance-range")
    };
    let v = c.create_with(req).await;
    assert!(v.capacity_bytes >= GIB + 4096 && v.capacity_bytes <= 2 * GIB, "{}", v.capacity_bytes);
    assert_eq!(
        std::fs::metadata(c.file_of(&v)).unwrap().len() as i64,
        v.capacity_bytes,
        "the RDS file has that size"
    );
}

/// CSI: "This operation MUST be idempotent": the same call again answers the same volume.
pub async fn create_is_idempotent(c: &mut Ctx) {
    let a = c.create("conformance-twice").await;
    let b = c.create("conformance-twice").await;
    assert_eq!(a.volume_id, b.volume_id);
    assert_eq!(a.capacity_bytes, b.capacity_bytes);
    assert_eq!(a.volume_context, b.volume_context);
    let list = c.c.list_volumes(ListVolumesRequest::default()).await.unwrap().into_inner();
    assert_eq!(list.entries.len(), 1, "one volume, not two");
}

/// CSI "Volume already exists but is incompatible" → ALREADY_EXISTS.
pub async fn create_same_name_other_size(c: &mut Ctx) {
    c.create("conformance-size").await;
    let req = CreateVolumeRequest {
        capacity_range: Some(CapacityRange { required_bytes: 3 * GIB, limit_bytes: 3 * GIB }),
        ..c.create_req("conformance-size")
    };
    expect_code(c.c.create_volume(req).await, Code::AlreadyExists, "same name, other size");
}

/// CSI "name": the SP SHOULD support names of at least 128 bytes.
pub async fn create_max_length_name(c: &mut Ctx) {
    let name = "n".repeat(128);
    let v = c.create(&name).await;
    let again = c.create(&name).await;
    assert_eq!(v.volume_id, again.volume_id);
}

/// CSI "Unsupported capacity_range" → OUT_OF_RANGE (a limit below the smallest volume).
pub async fn create_unsupported_range(c: &mut Ctx) {
    let req = CreateVolumeRequest {
        capacity_range: Some(CapacityRange { required_bytes: 0, limit_bytes: 1000 }),
        ..c.create_req("conformance-tiny")
    };
    expect_code(c.c.create_volume(req).await, Code::OutOfRange, "limit below the minimum");
}

fn write_at(path: &std::path::Path, offset: u64, data: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, offset).unwrap();
    f.sync_all().unwrap();
}

fn read_at(path: &std::path::Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// Creates a volume from `source` until it is filled (ABORTED while copying, as the
/// provisioner retries).
async fn create_from(c: &mut Ctx, name: &str, source: Type) -> Volume {
    for _ in 0..240 {
        let req = CreateVolumeRequest {
            volume_content_source: Some(VolumeContentSource { r#type: Some(source.clone()) }),
            ..c.create_req(name)
        };
        match c.c.create_volume(req).await {
            Ok(r) => {
                let v = r.into_inner().volume.unwrap();
                c.made_volume(&v.volume_id);
                return v;
            }
            Err(s) if matches!(s.code(), Code::Aborted | Code::Unavailable) => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await
            }
            Err(s) => panic!("CreateVolume from {source:?}: {:?} {}", s.code(), s.message()),
        }
    }
    panic!("CreateVolume {name} was never filled");
}

/// CSI "volume_content_source" (snapshot): the new volume holds the snapshot's data, is at
/// least its size, and reports the source.
pub async fn create_from_snapshot(c: &mut Ctx) {
    let src = c.create("conformance-origin").await;
    write_at(&c.file_of(&src), 4096, b"snapshot data");
    let snap = c.snapshot("conformance-snap", &src.volume_id).await;
    write_at(&c.file_of(&src), 4096, b"changed later");
    let source = Type::Snapshot(SnapshotSource { snapshot_id: snap.snapshot_id.clone() });
    let v = create_from(c, "conformance-restored", source.clone()).await;
    assert!(v.capacity_bytes >= snap.size_bytes);
    assert_eq!(v.content_source, Some(VolumeContentSource { r#type: Some(source) }));
    assert_eq!(read_at(&c.file_of(&v), 4096, 13), b"snapshot data");
}

/// CSI "Source does not exist" → NOT_FOUND, whatever the form of the id.
pub async fn create_from_missing_snapshot(c: &mut Ctx) {
    for id in
        ["snap-00000000-0000-4000-8000-000000000000-at-0000000000", "some-snapshot-id", "pvc-1"]
    {
        let req = CreateVolumeRequest {
            volume_content_source: Some(VolumeContentSource {
                r#type: Some(Type::Snapshot(SnapshotSource { snapshot_id: id.into() })),
            }),
            ..c.create_req("conformance-from-nothing")
        };
        expect_code(c.c.create_volume(req).await, Code::NotFound, &format!("snapshot source {id}"));
    }
    let list = c.c.list_volumes(ListVolumesRequest::default()).await.unwrap().into_inner();
    assert!(list.entries.is_empty(), "nothing was created");
}

/// CSI "volume_content_source" (volume): a clone holds the source's data.
pub async fn create_from_volume(c: &mut Ctx) {
    let src = c.create("conformance-clone-source").await;
    write_at(&c.file_of(&src), 0, b"clone me");
    let source = Type::Volume(VolumeSource { volume_id: src.volume_id.clone() });
    let v = create_from(c, "conformance-clone", source.clone()).await;
    assert_ne!(v.volume_id, src.volume_id);
    assert_eq!(v.content_source, Some(VolumeContentSource { r#type: Some(source) }));
    assert_eq!(read_at(&c.file_of(&v), 0, 8), b"clone me");
}

/// CSI "Source does not exist" → NOT_FOUND, whatever the form of the id.
pub async fn create_from_missing_volume(c: &mut Ctx) {
    for id in ["pvc-00000000-0000-4000-8000-000000000000", "some-vol-id"] {
        let req = CreateVolumeRequest {
            volume_content_source: Some(VolumeContentSource {
                r#type: Some(Type::Volume(VolumeSource { volume_id: id.into() })),
            }),
            ..c.create_req("conformance-clone-of-nothing")
        };
        expect_code(c.c.create_volume(req).await, Code::NotFound, &format!("volume source {id}"));
    }
}

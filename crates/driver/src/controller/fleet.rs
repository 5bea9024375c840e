//! Several RDS appliances behind one controller (docs/topology.md). The [`Fleet`] holds one
//! [`Backend`] per RDS; every RPC on an existing volume, snapshot or group goes to the
//! backend its id names (`<name>:<slot>`, bare on `default`), CreateVolume places a new
//! volume by `accessibility_requirements`, the `backend` parameter and free space
//! (`core::topology::place`), and the listings and GetCapacity gather every backend's.
//! With one backend every call goes straight to it: nothing is read twice, and an outage is
//! waited out by the RouterOS client's retries. With several, a backend whose connection is
//! down fails fast (UNAVAILABLE naming it) and is left out of placement, capacity and
//! nothing else waits for it.

use std::{collections::HashMap, sync::Arc};

use csi::v1::{
    CreateVolumeRequest, GetCapacityRequest, GetCapacityResponse, ListSnapshotsRequest,
    ListSnapshotsResponse, ListVolumesRequest, ListVolumesResponse, volume_content_source::Type,
};
use futures::future::join_all;

use super::backend::Backend;
use crate::{
    core::{
        access, capacity, ids,
        paging::{self, Listing},
        params,
        topology::{self, Candidate, PlaceError},
    },
    error::ServiceError,
};

/// The StorageClass parameter naming the backend of new volumes.
pub const BACKEND_PARAM: &str = "backend";

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(msg.into())
}

/// The controller's backends, in the order of the backends file (`default` first with the
/// single-RDS flags).
pub struct Fleet {
    members: Vec<Arc<Backend>>,
}

impl Fleet {
    /// `members` must be non-empty with distinct names (the backends file is checked first).
    pub fn new(members: Vec<Arc<Backend>>) -> Fleet {
        assert!(!members.is_empty(), "a fleet has at least one backend");
        Fleet { members }
    }

    pub fn single(backend: Arc<Backend>) -> Fleet {
        Fleet::new(vec![backend])
    }

    pub fn members(&self) -> &[Arc<Backend>] {
        &self.members
    }

    /// The first backend: it answers the calls that name none (empty ids: INVALID_ARGUMENT).
    pub fn first(&self) -> &Arc<Backend> {
        &self.members[0]
    }

    pub fn named(&self, name: &str) -> Option<&Arc<Backend>> {
        self.members.iter().find(|b| b.name == name)
    }

    fn names(&self) -> String {
        self.members.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// The backend `id` names. An empty id goes to the first backend (which refuses it); an
    /// id naming no backend of this controller is NOT_FOUND, with the backend named.
    pub fn route(&self, id: &str) -> Result<&Arc<Backend>, ServiceError> {
        if id.is_empty() {
            return Ok(self.first());
        }
        let (name, _) = topology::split_id(id);
        let b = self.named(name).ok_or_else(|| {
            ServiceError::NotFound(format!(
                "{id:?} belongs to backend {name:?}, which this controller does not have (its backends: {}); \
                 add {name:?} to the backends file (docs/topology.md)",
                self.names()
            ))
        })?;
        self.usable(b)?;
        Ok(b)
    }

    /// The backend of a Delete* call's id, or `None` when there is nothing to delete: CSI
    /// answers OK for an id this driver never made (`made_here` of its slot part is false),
    /// but a well-formed id of a backend this controller lacks is NOT_FOUND (its disk may
    /// still exist on an appliance missing from the backends file).
    pub fn route_delete(
        &self,
        id: &str,
        made_here: fn(&str) -> bool,
    ) -> Result<Option<&Arc<Backend>>, ServiceError> {
        match self.route(id) {
            Ok(b) => Ok(Some(b)),
            Err(_) if !made_here(topology::split_id(id).1) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Why `b` cannot serve now: with several backends, its connection is down.
    fn down(&self, b: &Backend) -> Option<String> {
        match b.readiness.get() {
            crate::readiness::ReadyState::NotReady(r) if self.members.len() > 1 => Some(r),
            _ => None,
        }
    }

    /// UNAVAILABLE (the CO retries) while `b` is down; its volumes only.
    fn usable(&self, b: &Backend) -> Result<(), ServiceError> {
        match self.down(b) {
            Some(r) => Err(ServiceError::Unavailable(format!(
                "backend {} is down ({r}): its volumes are unavailable until it is back; the other backends serve",
                b.name
            ))),
            None => Ok(()),
        }
    }

    /// The backend a `backend` parameter names; INVALID_ARGUMENT for an unknown name.
    fn by_param(&self, p: &HashMap<String, String>) -> Result<Option<&Arc<Backend>>, ServiceError> {
        let Some(name) = p.get(BACKEND_PARAM) else { return Ok(None) };
        self.named(name).map(Some).ok_or_else(|| {
            invalid(format!(
                "parameter backend={name:?} names no backend of this controller: use one of {}",
                self.names()
            ))
        })
    }

    /// CSI CreateVolume's placement: the backend that makes (or, on a retry, already holds)
    /// the volume. A restore or clone stays on its source's backend; otherwise the backends
    /// the `backend` parameter allows, accessible from a requisite topology, in the order of
    /// the preferred ones and free space; RESOURCE_EXHAUSTED when none can hold it.
    pub async fn place(&self, req: &CreateVolumeRequest) -> Result<&Arc<Backend>, ServiceError> {
        if req.name.is_empty() {
            return Ok(self.first());
        }
        let named = self.by_param(&req.parameters)?;
        let (requisite, preferred) = req
            .accessibility_requirements
            .as_ref()
            .map(|a| {
                let seg = |v: &[csi::v1::Topology]| {
                    v.iter().map(|t| t.segments.clone()).collect::<Vec<_>>()
                };
                (seg(&a.requisite), seg(&a.preferred))
            })
            .unwrap_or_default();
        let reaches = |b: &Backend| {
            requisite.is_empty()
                || requisite.iter().any(|t| topology::accessible_from(&b.topology, t))
        };
        if let Some(src) = req.volume_content_source.as_ref().and_then(|s| s.r#type.as_ref()) {
            let (id, what) = match src {
                Type::Snapshot(s) => (&s.snapshot_id, "snapshot"),
                Type::Volume(v) => (&v.volume_id, "volume"),
            };
            let b = self.route(id)?;
            if let Some(n) = named.filter(|n| n.name != b.name) {
                return Err(invalid(format!(
                    "source {what} {id} is on backend {}, but parameter backend={} asks for another: restores and clones stay on their source's backend (copying between appliances is not supported)",
                    b.name, n.name
                )));
            }
            if !reaches(b) {
                return Err(invalid(format!(
                    "source {what} {id} is on backend {} (segments {:?}), which the requested topology does not include: restores and clones stay on their source's backend",
                    b.name, b.topology
                )));
            }
            return Ok(b);
        }
        let pool: Vec<&Arc<Backend>> = match named {
            Some(b) => vec![b],
            None => self.members.iter().collect(),
        };
        if let [b] = pool[..] {
            // One candidate (one backend, or the one the parameter names): nothing to
            // choose, no read, CreateVolume stays one round trip (a full pool is the add's
            // own RESOURCE_EXHAUSTED; a retry is the add's refusal, then a look).
            if !reaches(b) {
                return Err(ServiceError::ResourceExhausted(format!(
                    "the requested topology does not include backend {} (segments {:?})",
                    b.name, b.topology
                )));
            }
            self.usable(b)?;
            return Ok(b);
        }
        // Several. A request the backends would refuse is refused first, with their code
        // (not RESOURCE_EXHAUSTED or UNAVAILABLE from placement).
        access::check_all(&req.volume_capabilities).map_err(invalid)?;
        access::check_new_filesystem(&req.volume_capabilities).map_err(invalid)?;
        let (required, limit) =
            req.capacity_range.as_ref().map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
        let cfg = &pool[0].cfg;
        let size = capacity::provision_size(required, limit, cfg.min_size, cfg.max_size)?;
        // A retry finds the volume where an earlier call made it, whatever the free space
        // says now; then free space decides among the rest.
        let (slot, _) = ids::slot_for_name(&req.name);
        // A backend that is down is not read (it may hold an earlier attempt's volume: that
        // one is then an orphan the reconciler reports, docs/topology.md).
        let looks = join_all(pool.iter().map(|b| async {
            if let Some(why) = self.down(b) {
                return (
                    Err(ServiceError::Unavailable(why.clone())),
                    Err(ServiceError::Unavailable(why)),
                );
            }
            let disk =
                b.rds.get_disk(&slot).await.map_err(ServiceError::rds("looking for the volume"));
            let free = b.free_bytes(&req.parameters).await;
            (disk, free)
        }))
        .await;
        let mut free = Vec::new();
        for (b, (disk, f)) in pool.iter().zip(looks) {
            if let Ok(Some(_)) = disk {
                return Ok(b);
            }
            // A parameter this backend refuses (volumePath outside its base paths, say).
            if let Err(e @ ServiceError::InvalidArgument(_)) = f {
                return Err(e);
            }
            if let Err(e) = &f {
                tracing::warn!(backend = %b.name, error = %e, "placement: backend not readable, left out");
            }
            free.push(if disk.is_ok() { f.ok() } else { None });
        }
        let cands: Vec<Candidate> = pool
            .iter()
            .zip(&free)
            .map(|(b, f)| Candidate {
                name: &b.name,
                segments: &b.topology,
                // A backend named by the parameter takes the volume whatever its weight.
                weight: if named.is_some() { b.weight.max(1) } else { b.weight },
                free: *f,
            })
            .collect();
        match topology::place(&cands, &requisite, &preferred, size) {
            Ok(order) => Ok(pool[order[0]]),
            Err(PlaceError::Topology(m) | PlaceError::NoRoom(m)) => {
                Err(ServiceError::ResourceExhausted(m))
            }
            Err(PlaceError::Unreachable(m)) => Err(ServiceError::Unavailable(m)),
        }
    }

    /// CSI "GetCapacity" per topology segment: the sum over the backends accessible from
    /// `accessible_topology` (all without one) that the `backend` parameter allows; the
    /// largest volume any one of them can hold. An unreachable backend counts nothing.
    pub async fn get_capacity(
        &self,
        req: GetCapacityRequest,
    ) -> Result<GetCapacityResponse, ServiceError> {
        let named = self.by_param(&req.parameters)?;
        let chosen: Vec<&Arc<Backend>> = self
            .members
            .iter()
            .filter(|b| named.is_none_or(|n| n.name == b.name))
            // A backend that is down has no capacity to offer.
            .filter(|b| self.down(b).is_none())
            .filter(|b| {
                req.accessible_topology
                    .as_ref()
                    .is_none_or(|t| topology::accessible_from(&b.topology, &t.segments))
            })
            .collect();
        if chosen.is_empty() {
            return Ok(GetCapacityResponse {
                available_capacity: 0,
                maximum_volume_size: Some(0),
                minimum_volume_size: Some(self.first().cfg.min_size as i64),
            });
        }
        if chosen.len() == 1 {
            return chosen[0].get_capacity(req).await;
        }
        let answers = join_all(chosen.iter().map(|b| b.get_capacity(req.clone()))).await;
        let mut read = Vec::new();
        let mut first_error = None;
        for (b, a) in chosen.iter().zip(answers) {
            match a {
                Ok(a) => read.push(a),
                Err(e) => {
                    tracing::warn!(backend = %b.name, error = %e, "GetCapacity: backend not readable, counted as 0");
                    first_error.get_or_insert(e);
                }
            }
        }
        if let (true, Some(e)) = (read.is_empty(), first_error) {
            return Err(e);
        }
        Ok(GetCapacityResponse {
            available_capacity: read.iter().map(|a| a.available_capacity).sum(),
            maximum_volume_size: read.iter().filter_map(|a| a.maximum_volume_size).max(),
            minimum_volume_size: read.iter().filter_map(|a| a.minimum_volume_size).min(),
        })
    }

    /// UNAVAILABLE naming the first backend that is down: a listing of all must not leave
    /// one out (it would tell the CO that its volumes are gone).
    fn all_usable(&self) -> Result<(), ServiceError> {
        self.members.iter().try_for_each(|b| self.usable(b))
    }

    /// CSI "ListVolumes" over every backend, sorted by id and paginated as one listing. A
    /// backend that cannot be read makes the listing UNAVAILABLE (naming it): a partial
    /// list would tell the CO that volumes are gone.
    pub async fn list_volumes(
        &self,
        req: ListVolumesRequest,
    ) -> Result<ListVolumesResponse, ServiceError> {
        if self.members.len() == 1 {
            return self.first().list_volumes(req).await;
        }
        if req.max_entries < 0 {
            return Err(invalid("max_entries must not be negative"));
        }
        let after =
            paging::after(Listing::Volumes, &req.starting_token).map_err(ServiceError::Aborted)?;
        self.all_usable()?;
        let all = ListVolumesRequest { max_entries: 0, starting_token: String::new() };
        let mut entries = Vec::new();
        for (b, answer) in self
            .members
            .iter()
            .zip(join_all(self.members.iter().map(|b| b.list_volumes(all.clone()))).await)
        {
            entries.extend(answer.map_err(|e| on_backend(&b.name, e))?.entries);
        }
        fn id(e: &csi::v1::list_volumes_response::Entry) -> &str {
            e.volume.as_ref().map_or("", |v| v.volume_id.as_str())
        }
        entries.sort_by(|a, b| id(a).cmp(id(b)));
        let (entries, next_token) =
            paging::page(Listing::Volumes, entries, id, after.as_deref(), req.max_entries as usize);
        Ok(ListVolumesResponse { entries, next_token })
    }

    /// CSI "ListSnapshots": by id or source, the backend it names (an unknown backend lists
    /// nothing); otherwise every backend's, as one listing.
    pub async fn list_snapshots(
        &self,
        req: ListSnapshotsRequest,
    ) -> Result<ListSnapshotsResponse, ServiceError> {
        let by = [&req.snapshot_id, &req.source_volume_id].into_iter().find(|i| !i.is_empty());
        match by {
            _ if self.members.len() == 1 => return self.first().list_snapshots(req).await,
            Some(id) => {
                return match self.route(id) {
                    Ok(b) => b.list_snapshots(req).await,
                    // A snapshot of a backend this controller does not have: none listed,
                    // as for any unknown id (the token is still checked). A backend that
                    // is down is UNAVAILABLE: its snapshots are not gone.
                    Err(ServiceError::NotFound(_)) => {
                        self.first()
                            .list_snapshots(ListSnapshotsRequest {
                                snapshot_id: "snap-unknown-backend".into(),
                                ..req
                            })
                            .await
                    }
                    Err(e) => Err(e),
                };
            }
            None => {}
        }
        if req.max_entries < 0 {
            return Err(invalid("max_entries must not be negative"));
        }
        let after = paging::after(Listing::Snapshots, &req.starting_token)
            .map_err(ServiceError::Aborted)?;
        self.all_usable()?;
        let all =
            ListSnapshotsRequest { max_entries: 0, starting_token: String::new(), ..req.clone() };
        let mut snaps = Vec::new();
        for (b, answer) in self
            .members
            .iter()
            .zip(join_all(self.members.iter().map(|b| b.list_snapshots(all.clone()))).await)
        {
            snaps.extend(
                answer
                    .map_err(|e| on_backend(&b.name, e))?
                    .entries
                    .into_iter()
                    .filter_map(|e| e.snapshot),
            );
        }
        Ok(super::snapshots::page_snapshots(snaps, after.as_deref(), req.max_entries))
    }

    /// The backend of a group snapshot's volumes: one backend for all (a group is one
    /// instant on one appliance), INVALID_ARGUMENT otherwise.
    pub fn group_backend(&self, ids: &[String]) -> Result<&Arc<Backend>, ServiceError> {
        let Some(first) = ids.first() else { return Ok(self.first()) };
        let b = self.route(first)?;
        for id in ids {
            let other = self.route(id)?;
            if other.name != b.name {
                return Err(invalid(format!(
                    "source_volume_ids span backends {} and {}: a group snapshot is taken at one instant on one RDS; group volumes of one backend",
                    b.name, other.name
                )));
            }
        }
        Ok(b)
    }
}

/// An error of one backend, with its name when the message lacks it.
fn on_backend(name: &str, e: ServiceError) -> ServiceError {
    match e {
        ServiceError::Rds { context, source } => {
            ServiceError::Rds { context: format!("backend {name}: {context}"), source }
        }
        e => e,
    }
}

impl Backend {
    /// Free bytes of the pool that would hold a new volume with `parameters` (placement).
    async fn free_bytes(&self, parameters: &HashMap<String, String>) -> Result<u64, ServiceError> {
        let p = params::parse(parameters, &self.cfg.volume_path, &self.cfg.allowed_base_paths)
            .map_err(invalid)?;
        self.pool_free(&p).await
    }
}

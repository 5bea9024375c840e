//! The emulator's persistent state: the `/disk` table as JSON in the data directory, and the
//! real backing files under `DATA-DIR/fs/`. Everything survives a restart, which therefore
//! looks like an RDS reboot.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use crate::model::{Disk, Kind, Pool, Subvolume, Usage};

const STATE_FILE: &str = "state.json";
/// Where the RDS file tree lives under the data directory (`/storage-pool/x.img` is `<dir>/fs/storage-pool/x.img`).
pub const FILES_DIR: &str = "fs";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    next_id: u32,
    identity: String,
    disks: Vec<Disk>,
    #[serde(default)]
    subvolumes: Vec<Subvolume>,
}

/// How a new data directory is initialised.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub pool_slot: String,
    pub pool_size: u64,
}

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    state: State,
}

/// An entry of `/file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative name without a leading slash (`storage-pool/x.img`).
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    pub modified: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A mount point of a disk.
    Disk,
    Directory,
    File,
}

impl FileKind {
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Disk => "disk",
            FileKind::Directory => "directory",
            FileKind::File => "file",
        }
    }
}

/// Normalises a RouterOS file path: no leading slash, no `.`/`..`, not empty.
pub fn normalize_path(path: &str) -> Option<String> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    let ok = !trimmed.is_empty()
        && trimmed.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && !trimmed.contains('\0');
    ok.then(|| trimmed.to_string())
}

impl Store {
    /// Opens DATA-DIR, creating the state (one storage pool) on first use.
    pub fn open(dir: &Path, init: &InitOptions) -> io::Result<Store> {
        fs::create_dir_all(dir.join(FILES_DIR))?;
        let state_path = dir.join(STATE_FILE);
        let state = match fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", state_path.display()))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let seed = dir.display().to_string().len() as u32;
                let pool = Disk {
                    id: 1,
                    slot: init.pool_slot.clone(),
                    comment: String::new(),
                    disabled: false,
                    kind: Kind::Raid(Pool {
                        mount_point: init.pool_slot.clone(),
                        size: init.pool_size,
                        fs_uuid: format!("4043{seed:04x}-0c3d-4e5f-8a9b-0c1d2e3f4a5b"),
                        raid_uuid: format!("eadca0af-{seed:04x}-4b2c-9d3e-1f2a3b4c5d6e"),
                        btrfs: false,
                    }),
                    nvme: Default::default(),
                    compress: false,
                };
                State {
                    next_id: 2,
                    identity: "RDS".into(),
                    disks: vec![pool],
                    subvolumes: Vec::new(),
                }
            }
            Err(e) => return Err(e),
        };
        let store = Store { dir: dir.to_path_buf(), state };
        for disk in &store.state.disks {
            if let Kind::Raid(pool) = &disk.kind {
                fs::create_dir_all(store.host_path(&pool.mount_point))?;
            }
        }
        store.save()?;
        Ok(store)
    }

    fn save(&self) -> io::Result<()> {
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&self.state).map_err(io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(tmp, self.dir.join(STATE_FILE))
    }

    pub fn identity(&self) -> &str {
        &self.state.identity
    }

    pub fn disks(&self) -> &[Disk] {
        &self.state.disks
    }

    pub fn disk(&self, id: u32) -> Option<&Disk> {
        self.state.disks.iter().find(|d| d.id == id)
    }

    /// Where a RouterOS path (already normalised) lives on the host.
    pub fn host_path(&self, name: &str) -> PathBuf {
        self.dir.join(FILES_DIR).join(name)
    }

    /// Bytes used on `pool`: the logical size of every file under its mount point (files of
    /// removed disks included: `/disk remove` leaves them).
    pub fn usage(&self, pool: &Pool) -> Usage {
        fn walk(p: &Path) -> u64 {
            let Ok(entries) = fs::read_dir(p) else { return 0 };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        Usage { used: walk(&self.host_path(&pool.mount_point)) }
    }

    /// Usage of whichever pool holds `disk` (zero for file disks themselves).
    pub fn usage_of(&self, disk: &Disk) -> Usage {
        match &disk.kind {
            Kind::Raid(pool) => self.usage(pool),
            Kind::File(_) => Usage::default(),
        }
    }

    /// The pool whose mount point contains `path`, if any.
    pub fn pool_for(&self, path: &str) -> Option<&Pool> {
        self.state.disks.iter().find_map(|d| match &d.kind {
            Kind::Raid(pool) if path.starts_with(&format!("{}/", pool.mount_point)) => Some(pool),
            _ => None,
        })
    }

    /// Inserts a new disk, assigning its id.
    pub fn insert(&mut self, mut disk: Disk) -> io::Result<u32> {
        disk.id = self.state.next_id;
        self.state.next_id += 1;
        self.state.disks.push(disk);
        self.save()?;
        Ok(self.state.next_id - 1)
    }

    pub fn update(&mut self, disk: Disk) -> io::Result<()> {
        if let Some(slot) = self.state.disks.iter_mut().find(|d| d.id == disk.id) {
            *slot = disk;
        }
        self.save()
    }

    /// Adds a btrfs pool `slot` of `size` bytes mounted at `slot` (tests mount a real btrfs
    /// filesystem on its directory, [`Store::host_path`]).
    pub fn add_btrfs_pool(&mut self, slot: &str, size: u64) -> io::Result<()> {
        let pool = Disk {
            id: 0,
            slot: slot.into(),
            comment: String::new(),
            disabled: false,
            kind: Kind::Raid(Pool {
                mount_point: slot.into(),
                size,
                fs_uuid: "b7f5c0de-0000-4000-8000-00000000b7f5".into(),
                raid_uuid: "b7f5c0de-0000-4000-8000-0000000000aa".into(),
                btrfs: true,
            }),
            nvme: Default::default(),
            compress: false,
        };
        fs::create_dir_all(self.host_path(slot))?;
        self.insert(pool).map(|_| ())
    }

    /// The mount point of the btrfs pool whose filesystem label is `label`.
    pub fn btrfs_mount(&self, label: &str) -> Option<String> {
        self.state.disks.iter().find_map(|d| match &d.kind {
            Kind::Raid(p) if p.btrfs && format!("{}-fs", d.slot) == label => {
                Some(p.mount_point.clone())
            }
            _ => None,
        })
    }

    pub fn subvolumes(&self) -> &[Subvolume] {
        &self.state.subvolumes
    }

    pub fn insert_subvolume(&mut self, mut v: Subvolume) -> io::Result<u32> {
        v.id = self.state.next_id;
        self.state.next_id += 1;
        let id = v.id;
        self.state.subvolumes.push(v);
        self.save().map(|_| id)
    }

    pub fn remove_subvolume(&mut self, id: u32) -> io::Result<()> {
        self.state.subvolumes.retain(|v| v.id != id);
        self.save()
    }

    pub fn remove(&mut self, id: u32) -> io::Result<()> {
        self.state.disks.retain(|d| d.id != id);
        self.save()
    }

    pub fn set_identity(&mut self, name: String) -> io::Result<()> {
        self.state.identity = name;
        self.save()
    }

    /// Creates or resizes the backing file of `name` to `size` bytes; sparse unless
    /// `preallocate`.
    pub fn size_file(&self, name: &str, size: u64, preallocate: bool) -> io::Result<()> {
        let path = self.host_path(name);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        // A file already of that size is left alone (and may be read-only: a disk item over an
        // image in a read-only btrfs snapshot).
        if fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == size) {
            return Ok(());
        }
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        let old = file.metadata()?.len();
        file.set_len(size)?;
        if preallocate && size > old {
            use std::os::fd::AsRawFd;
            // SAFETY: posix_fallocate on a valid open descriptor; no memory is shared.
            let rc = unsafe {
                libc::posix_fallocate(
                    file.as_raw_fd(),
                    old as libc::off_t,
                    (size - old) as libc::off_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
        }
        file.sync_all()
    }

    pub fn file_len(&self, name: &str) -> Option<u64> {
        fs::metadata(self.host_path(name)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    /// Copies `len` bytes from `src` at `src_off` to `dst` at `dst_off`, skipping holes so a
    /// sparse source stays sparse.
    pub fn copy_range(
        &self,
        src: &str,
        src_off: u64,
        dst: &str,
        dst_off: u64,
        len: u64,
    ) -> io::Result<()> {
        let mut from = File::open(self.host_path(src))?;
        let to = OpenOptions::new().write(true).open(self.host_path(dst))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < len {
            let at = src_off + done;
            let data = next_data(&from, at)?.unwrap_or(src_off + len);
            if data >= src_off + len {
                break;
            }
            if data > at {
                done = data - src_off;
                continue;
            }
            from.seek(SeekFrom::Start(at))?;
            let want = buf.len().min((len - done) as usize);
            let n = from.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|&b| b != 0) {
                to.write_all_at(&buf[..n], dst_off + done)?;
            }
            done += n as u64;
        }
        to.sync_all()
    }

    /// Entries of `/file`: mount points (type disk), directories and files.
    pub fn files(&self) -> Vec<FileEntry> {
        fn walk(root: &Path, rel: &str, out: &mut Vec<FileEntry>, top: bool) {
            let Ok(entries) = fs::read_dir(root.join(rel)) else { return };
            let mut entries: Vec<_> = entries.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name().to_string_lossy().into_owned();
                let name = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                let Ok(meta) = e.metadata() else { continue };
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                if meta.is_dir() {
                    let kind = if top { FileKind::Disk } else { FileKind::Directory };
                    out.push(FileEntry { name: name.clone(), kind, size: 0, modified });
                    walk(root, &name, out, false);
                } else {
                    out.push(FileEntry { name, kind: FileKind::File, size: meta.len(), modified });
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir.join(FILES_DIR), "", &mut out, true);
        out
    }

    /// Deletes a file (or an empty directory) by its `/file` name.
    pub fn remove_file(&self, name: &str) -> io::Result<()> {
        let path = self.host_path(name);
        if path.is_dir() { fs::remove_dir(path) } else { fs::remove_file(path) }
    }
}

/// The next offset ≥ `at` holding data (SEEK_DATA), or `None` past the last data.
fn next_data(file: &File, at: u64) -> io::Result<Option<u64>> {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on a valid descriptor; it only moves the file offset.
    let off = unsafe { libc::lseek(file.as_raw_fd(), at as libc::off_t, libc::SEEK_DATA) };
    if off < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            // Filesystems without SEEK_DATA: treat everything as data.
            Some(libc::EINVAL) => Ok(Some(at)),
            _ => Err(err),
        };
    }
    Ok(Some(off as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() -> InitOptions {
        InitOptions { pool_slot: "storage-pool".into(), pool_size: 1 << 40 }
    }

    #[test]
    fn paths_are_normalised_and_confined() {
        assert_eq!(
            normalize_path("/storage-pool/a/x.img").as_deref(),
            Some("storage-pool/a/x.img")
        );
        assert_eq!(normalize_path("storage-pool/x.img").as_deref(), Some("storage-pool/x.img"));
        for bad in ["", "/", "../etc/passwd", "a/../../b", "a/./b"] {
            assert_eq!(normalize_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn state_and_files_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), &init()).unwrap();
        assert_eq!(store.disks().len(), 1, "a new RDS has its storage pool");
        store.size_file("storage-pool/csi/a.img", 8 << 20, false).unwrap();
        let mut disk = store.disks()[0].clone();
        disk.slot = "a".into();
        disk.kind = Kind::File(crate::model::FileDisk {
            path: "storage-pool/csi/a.img".into(),
            size: 8 << 20,
            offset: 0,
        });
        let id = store.insert(disk).unwrap();
        drop(store);
        let store = Store::open(dir.path(), &init()).unwrap();
        assert_eq!(store.disk(id).unwrap().slot, "a");
        assert_eq!(store.file_len("storage-pool/csi/a.img"), Some(8 << 20));
        let Kind::Raid(pool) = &store.disks()[0].kind else { panic!() };
        assert_eq!(store.usage(pool).used, 8 << 20);
        let names: Vec<_> = store.files().into_iter().map(|f| (f.name, f.kind)).collect();
        assert_eq!(
            names,
            [
                ("storage-pool".to_string(), FileKind::Disk),
                ("storage-pool/csi".to_string(), FileKind::Directory),
                ("storage-pool/csi/a.img".to_string(), FileKind::File),
            ]
        );
    }

    #[test]
    fn sparse_copy_copies_data_and_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &init()).unwrap();
        store.size_file("storage-pool/src.img", 64 << 20, false).unwrap();
        store.size_file("storage-pool/dst.img", 64 << 20, false).unwrap();
        let src =
            OpenOptions::new().write(true).open(store.host_path("storage-pool/src.img")).unwrap();
        src.write_all_at(b"hello", 40 << 20).unwrap();
        store.copy_range("storage-pool/src.img", 0, "storage-pool/dst.img", 0, 64 << 20).unwrap();
        let mut got = [0u8; 5];
        File::open(store.host_path("storage-pool/dst.img"))
            .unwrap()
            .read_exact_at(&mut got, 40 << 20)
            .unwrap();
        assert_eq!(&got, b"hello");
        use std::os::unix::fs::MetadataExt;
        let blocks = fs::metadata(store.host_path("storage-pool/dst.img")).unwrap().blocks();
        assert!(blocks * 512 < 8 << 20, "destination stayed sparse ({blocks} blocks)");
    }
}

#[cfg(test)]
mod chunk_tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn chunked_copies_of_chunked_copies_keep_data_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(dir.path(), &InitOptions { pool_slot: "p".into(), pool_size: 1 << 40 })
                .unwrap();
        let (gib, size) = (1u64 << 30, 8u64 << 30);
        for f in ["p/a.img", "p/s.img", "p/b.img"] {
            store.size_file(f, size, false).unwrap();
        }
        OpenOptions::new()
            .write(true)
            .open(store.host_path("p/a.img"))
            .unwrap()
            .write_all_at(b"TAIL", 7 * gib)
            .unwrap();
        for (src, dst) in [("p/a.img", "p/s.img"), ("p/s.img", "p/b.img")] {
            for chunk in 0..8 {
                store.copy_range(src, chunk * gib, dst, chunk * gib, gib).unwrap();
            }
            let mut buf = [0u8; 4];
            File::open(store.host_path(dst)).unwrap().read_exact_at(&mut buf, 7 * gib).unwrap();
            assert_eq!(&buf, b"TAIL", "{src} -> {dst}");
        }
    }
}

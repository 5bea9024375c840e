//! Binding the gRPC endpoint, with the stale-socket rule: an existing socket file is removed
//! only when nothing answers on it; a live one is an error; anything that is not a socket is
//! never touched.

use std::{
    io,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::net::{TcpListener, UnixListener, UnixStream};

/// How long a connection attempt to an existing socket may take before we call it live.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "another process is serving on {0}: stop it first, or pass a different --endpoint \
         (a second driver on the same socket would steal its RPCs)"
    )]
    InUse(PathBuf),
    #[error(
        "{0} exists and is not a socket; refusing to replace it: remove it or choose another --endpoint"
    )]
    NotASocket(PathBuf),
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: String, source: io::Error },
}

fn io_err(action: &'static str, path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> ListenError {
    let path = path.as_ref().display().to_string();
    move |source| ListenError::Io { action, path, source }
}

/// A bound unix socket that knows which file is its own, so cleanup never removes a socket
/// another process created at the same path after us.
#[derive(Debug)]
pub struct BoundUnixSocket {
    pub listener: UnixListener,
    pub path: PathBuf,
    inode: u64,
}

impl BoundUnixSocket {
    /// Removes the socket file if it is still the one we bound.
    pub fn remove_file(path: &Path, inode: u64) -> io::Result<bool> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() && meta.ino() == inode => {
                std::fs::remove_file(path)?;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn inode(&self) -> u64 {
        self.inode
    }
}

/// Prepares `path` (removing only a dead socket) and binds it.
pub async fn bind_unix(path: &Path) -> Result<BoundUnixSocket, ListenError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
            }
        }
        Err(e) => return Err(io_err("inspect", path)(e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ListenError::NotASocket(path.into()));
        }
        Ok(_) => match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
            Ok(Ok(_live)) => return Err(ListenError::InUse(path.into())),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(io_err("remove stale socket", path))?;
                tracing::info!(path = %path.display(), "removed stale socket: nothing was listening on it");
            }
            Ok(Err(e)) => return Err(io_err("probe existing socket", path)(e)),
            // Something holds the socket but does not complete a connection: treat it as live.
            Err(_) => return Err(ListenError::InUse(path.into())),
        },
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            ListenError::InUse(path.into())
        } else {
            io_err("bind", path)(e)
        }
    })?;
    let inode = std::fs::symlink_metadata(path).map_err(io_err("inspect", path))?.ino();
    Ok(BoundUnixSocket { listener, path: path.into(), inode })
}

pub async fn bind_tcp(addr: &str) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr).await.map_err(io_err("bind", addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rds-csi-listener-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_refused() {
        let dir = scratch("stale");
        let path = dir.join("csi.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // leaves a dead socket file
        let bound = bind_unix(&path).await.expect("stale socket replaced");
        let err = bind_unix(&path).await.unwrap_err();
        assert!(matches!(err, ListenError::InUse(_)), "{err}");
        assert!(err.to_string().contains("--endpoint"));
        assert!(BoundUnixSocket::remove_file(&path, bound.inode()).unwrap());
        assert!(!path.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn never_replaces_a_regular_file() {
        let dir = scratch("regular");
        let path = dir.join("csi.sock");
        std::fs::write(&path, b"precious").unwrap();
        let err = bind_unix(&path).await.unwrap_err();
        assert!(matches!(err, ListenError::NotASocket(_)), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn cleanup_leaves_someone_elses_socket() {
        let dir = scratch("foreign");
        let path = dir.join("csi.sock");
        let ours = bind_unix(&path).await.unwrap();
        let inode = ours.inode();
        drop(ours);
        // Move our file aside (it keeps its inode), so the new socket surely has another one.
        std::fs::rename(&path, dir.join("old.sock")).unwrap();
        let _theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(!BoundUnixSocket::remove_file(&path, inode).unwrap());
        assert!(path.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

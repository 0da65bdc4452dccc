//! This terminal's writer (`<device id>.<incarnation>`): kept across clean restarts,
//! kill -9 and power cuts, and replaced only when continuity cannot be proved.
//!
//! Why keep it: every writer stays in the clock and counters of every entity it
//! touched, so a writer per start made a popular product's record grow by one entry
//! per restart for ever (63x slower sales after a year of daily restarts).
//!
//! Why that is safe: (writer, sequence) pairs and dots must never be reused for other
//! content, and reuse only happens when the log lost changes that peers already hold.
//! - A power cut cannot lose a commit a peer has seen: the store commits with
//!   `synchronous = FULL`, and SQLite makes a commit visible to readers (and so to
//!   pullers) only after the WAL is synced.
//! - A copied or restored data dir is told apart by its marker: this machine's id and
//!   the database file's device, inode and birth time, which a copy does not keep.
//! - What neither can see (a disk that acknowledged a sync it did not do, a file
//!   written back over the same inode) shows when a peer holds more of the writer than
//!   the log: the store then retires the writer, and the next write takes a new one.

use std::path::Path;

use tillmesh_domain::ports::{Store, StoreError, WriterRecord};
use tillmesh_domain::DeviceId;
use tokio::sync::Mutex;

/// Why a new writer was taken at start-up, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewWriterReason {
    /// The data dir had none (first start, or an older build's data dir).
    FirstStart,
    /// The marker differs: the data dir was copied or restored.
    CopiedOrRestored,
    /// A peer held more of the old writer than the log.
    Retired,
}

/// The writer this terminal writes under now, replaced when it is retired.
pub struct Writer {
    device: DeviceId,
    marker: String,
    store: std::sync::Arc<dyn Store>,
    current: std::sync::RwLock<WriterRecord>,
    rotating: Mutex<()>,
}

impl Writer {
    /// Loads the stored writer, or takes a new one when continuity cannot be proved.
    ///
    /// # Errors
    /// Store errors.
    pub async fn open(
        device: DeviceId,
        store: std::sync::Arc<dyn Store>,
        db_path: &Path,
    ) -> Result<(Self, Option<NewWriterReason>), StoreError> {
        let marker = data_marker(db_path);
        let (record, reason) = match store.writer().await? {
            Some(w) if w.marker == marker && !w.retired => (w, None),
            stored => {
                let reason = match &stored {
                    None => NewWriterReason::FirstStart,
                    Some(w) if w.retired => NewWriterReason::Retired,
                    Some(_) => NewWriterReason::CopiedOrRestored,
                };
                let since = stored.filter(|w| w.retired).map(|w| w.since);
                (take_new(&*store, &device, &marker, since).await?, Some(reason))
            }
        };
        let writer = Self { device, marker, store, current: std::sync::RwLock::new(record), rotating: Mutex::new(()) };
        Ok((writer, reason))
    }

    /// The writer now.
    pub fn current(&self) -> WriterRecord {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces `retired` (if it is still the current writer) by a new writer: a new
    /// log epoch, so pullers read the log again from the start.
    ///
    /// # Errors
    /// Store errors.
    pub async fn replace(&self, retired: &DeviceId) -> Result<WriterRecord, StoreError> {
        let _one = self.rotating.lock().await;
        let now = self.current();
        if &now.writer != retired {
            return Ok(now);
        }
        let fresh = take_new(&*self.store, &self.device, &self.marker, Some(now.since)).await?;
        tracing::warn!(old = %retired, new = %fresh.writer, "writer retired (a peer holds more of it than this log); writing under a new one");
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh.clone();
        Ok(fresh)
    }
}

async fn take_new(
    store: &dyn Store,
    device: &DeviceId,
    marker: &str,
    since: Option<u64>,
) -> Result<WriterRecord, StoreError> {
    let incarnation = hex::encode(rand::random::<[u8; 4]>());
    let writer = DeviceId::parse(format!("{device}.{incarnation}"))?;
    store.take_writer(writer, marker.to_string(), since).await
}

/// What ties a writer to this machine and this database file: the machine id (or the
/// host name where there is none) and the file's device and inode numbers and birth
/// time. Copying the data dir or restoring a backup makes a new file, hence a new
/// marker.
pub fn data_marker(db_path: &Path) -> String {
    let machine = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string()))
        .unwrap_or_default();
    let file = file_identity(db_path);
    format!("{machine}:{file}")
}

#[cfg(unix)]
fn file_identity(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        // The birth time too: a file system hands a freed inode number to the next new
        // file, so a data dir deleted and restored from a copy may get the same one.
        Ok(m) => {
            let born = m
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or_else(String::new, |d| d.as_nanos().to_string());
            format!("{}:{}:{born}", m.dev(), m.ino())
        }
        Err(_) => String::from("?"),
    }
}

#[cfg(not(unix))]
fn file_identity(path: &Path) -> String {
    // Without inode numbers, the creation time stands in (a copy is a new file).
    std::fs::metadata(path)
        .and_then(|m| m.created())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(|| String::from("?"), |d| d.as_nanos().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_database_file_has_another_marker_and_a_renamed_one_the_same() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("tillmesh.db");
        std::fs::write(&db, b"data").expect("write");
        let marker = data_marker(&db);
        assert_eq!(data_marker(&db), marker, "stable while the file stays");
        std::fs::write(&db, b"rewritten in place").expect("rewrite");
        assert_eq!(data_marker(&db), marker, "writes in place keep it (a power cut does not change it)");
        let copy = dir.path().join("copy.db");
        std::fs::copy(&db, &copy).expect("copy");
        assert_ne!(data_marker(&copy), marker, "a copy is another file");
        std::fs::rename(&copy, &db).expect("restore the copy over the original");
        assert_ne!(data_marker(&db), marker, "a restored copy is told apart");
        // Deleted and restored: the file system may hand out the same inode number.
        let restored = data_marker(&db);
        let saved = dir.path().join("saved.db");
        std::fs::copy(&db, &saved).expect("save");
        std::fs::remove_file(&db).expect("delete");
        std::fs::copy(&saved, &db).expect("restore");
        assert_ne!(data_marker(&db), restored, "a deleted and restored file is told apart");
    }
}

//! Secrets kept in the data dir: the admin token and the store key, each in its own
//! file readable only by the owner (0600), generated on first start.

use std::fs;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Returns the configured value (saved for later starts), the saved one, or a fresh
/// random one that is saved now.
///
/// # Errors
/// I/O errors writing or reading the file.
pub fn load_or_create(dir: &Path, file: &str, configured: Option<&str>) -> std::io::Result<String> {
    let path = dir.join(file);
    if let Some(v) = configured {
        write_private(&path, v)?;
        return Ok(v.to_string());
    }
    match fs::read_to_string(&path) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => {
            let v = random_token();
            write_private(&path, &v)?;
            Ok(v)
        }
    }
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(value.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Public store id derived from the store key: safe to advertise, useless to forge.
pub fn store_id(store_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tillmesh.store-id.v1");
    h.update(store_key.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// Constant-time equality of two secrets (compares their SHA-256 digests, so the
/// time does not depend on where they differ nor reveal the length).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_kept_with_owner_only_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(dir.path(), "admin-token", None).expect("create");
        let b = load_or_create(dir.path(), "admin-token", None).expect("reload");
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("admin-token")).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn secrets_compare_by_value() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
    }
}

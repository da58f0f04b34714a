//! The demo backend's whole state as one JSON document: its data and its
//! idempotency records, oldest first. It is what `--data-file` keeps on
//! disk (so the backend survives its own restart) and what `GET` and
//! `PUT /_snapshot` export and import (to copy a healthy replica into
//! a broken one: see "A backend lost its data" in docs/operations.md).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// One remembered `Idempotency-Key` and its first answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// The key.
    pub key: String,
    /// The fingerprint of the request it was first used for.
    pub fingerprint: u64,
    /// The first answer's status.
    pub status: u16,
    /// The first answer's body (JSON text, or empty).
    pub body: String,
}

/// The whole state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every key and its value.
    pub data: BTreeMap<String, Value>,
    /// The idempotency records, oldest first.
    pub keys: Vec<Remembered>,
}

impl Snapshot {
    /// Read a snapshot file; `Ok(None)` if there is none yet.
    pub fn load(path: &Path) -> Result<Option<Snapshot>, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{} is not a demo backend snapshot: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Write it to `path` atomically and durably: a temporary file,
    /// fsync, rename, fsync of the folder. A crash leaves the old state
    /// or the new one, never half of either.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_survives_the_round_trip_through_its_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("demo.json");
        assert_eq!(Snapshot::load(&path), Ok(None));
        let mut s = Snapshot::default();
        s.data.insert("a".into(), serde_json::json!([1, 2]));
        s.keys.push(Remembered {
            key: "e2e/kv/7/0".into(),
            fingerprint: 42,
            status: 201,
            body: "[1]".into(),
        });
        s.save(&path).expect("saved");
        assert_eq!(Snapshot::load(&path), Ok(Some(s)));
        std::fs::write(&path, b"{").expect("write");
        assert!(
            Snapshot::load(&path)
                .unwrap_err()
                .contains("not a demo backend snapshot")
        );
    }
}

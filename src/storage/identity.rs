//! Whose `data_dir` this is: a small file, `IDENTITY`, naming the cluster
//! and the node that wrote it. A node refuses to start on another node's
//! or another cluster's data (a copied disk, a mixed-up mount), which
//! would otherwise pass for its own promises and votes.

use std::fmt;
use std::path::Path;

/// The file's name inside `data_dir`.
pub const FILE: &str = "IDENTITY";

/// What the file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster's name.
    pub cluster: String,
    /// The node's name.
    pub node: String,
}

/// Why a `data_dir` is not this node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// It belongs to another node or cluster.
    Mismatch {
        /// Where.
        dir: String,
        /// Who wrote it.
        found: Identity,
        /// Who wants it.
        wanted: Identity,
    },
    /// It cannot be read or written.
    Io(String),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Mismatch { dir, found, wanted } => write!(
                f,
                "data_dir {dir} belongs to node {:?} of cluster {:?}, not to node {:?} of cluster \
                 {:?}: refusing to use another node's promises and votes. Point data_dir at this \
                 node's own folder (or an empty one, to rebuild it)",
                found.node, found.cluster, wanted.node, wanted.cluster
            ),
            IdentityError::Io(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for IdentityError {}

impl Identity {
    fn render(&self) -> String {
        format!(
            "# Written by ordo: the cluster and node this data_dir belongs to.\n\
             cluster = {:?}\nnode = {:?}\n",
            self.cluster, self.node
        )
    }

    fn parse(text: &str) -> Option<Identity> {
        let value = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
        };
        Some(Identity {
            cluster: value("cluster")?,
            node: value("node")?,
        })
    }

    /// Check `dir` is this identity's, and claim it if it is no one's
    /// yet. Call before the store is opened.
    pub fn claim(&self, dir: &Path) -> Result<(), IdentityError> {
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let found = Identity::parse(&text).ok_or_else(|| {
                    IdentityError::Io(format!(
                        "{} does not name a cluster and a node",
                        path.display()
                    ))
                })?;
                if found != *self {
                    return Err(IdentityError::Mismatch {
                        dir: dir.display().to_string(),
                        found,
                        wanted: self.clone(),
                    });
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::write(&path, self.render())
                    .map_err(|e| IdentityError::Io(format!("cannot write {}: {e}", path.display())))
            }
            Err(e) => Err(IdentityError::Io(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_is_claimed_once_and_refused_to_anyone_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let north = Identity {
            cluster: "shop".into(),
            node: "north".into(),
        };
        north.claim(dir.path()).expect("claimed");
        north.claim(dir.path()).expect("its own");
        let east = Identity {
            node: "east".into(),
            ..north.clone()
        };
        let err = east.claim(dir.path()).unwrap_err().to_string();
        assert!(err.contains("belongs to node \"north\""), "{err}");
        let other = Identity {
            cluster: "lab".into(),
            ..north
        };
        assert!(other.claim(dir.path()).is_err());
    }
}

//! The protocol roles, their driver and the sim core stay pure: no
//! runtime, no clock, no OS randomness, no hash-order iteration
//! (TigerBeetle's tidy check). A banned name in these files fails the
//! build's tests. And `src/` never reaches into `sim/`.

use std::path::{Path, PathBuf};

const BANNED: &[&str] = &[
    "tokio",
    "actix",
    "fjall",
    "Instant::now",
    "SystemTime",
    "thread_rng",
    "rand::",
    "HashMap",
    "HashSet",
    "std::thread",
    "std::net",
];

/// Folders whose every file must be pure, and single files beside them.
const PURE: &[&str] = &[
    "src/paxos",
    "src/apply",
    "src/driver",
    "sim",
    "src/storage/kv.rs",
    "src/time.rs",
    "src/rng.rs",
    "src/gateway/readiness.rs",
];

/// Files excused, with the reason.
const EXCUSED: &[(&str, &str)] = &[
    // The checker judges a finished history; its memo table is looked up,
    // never iterated, and its optional wall-clock deadline is a budget.
    ("sim/checker.rs", "judge, not simulated"),
    // Runs seeds on threads; each seed's run is single-threaded.
    ("sim/runner.rs", "parallel seed runner"),
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .expect("folder exists")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for e in entries {
            rust_files(&e, out);
        }
    } else if path.extension().is_some_and(|x| x == "rs") {
        out.push(path.to_path_buf());
    }
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .expect("under root")
        .to_string_lossy()
        .to_string()
}

/// Each line's code, without its `//` comment.
fn code_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("readable")
        .lines()
        .map(|l| l.split("//").next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn roles_driver_and_sim_mention_no_runtime_clock_or_os_randomness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for p in PURE {
        rust_files(&root.join(p), &mut files);
    }
    let mut checked = 0;
    let mut problems = Vec::new();
    for path in files {
        let rel = rel(root, &path);
        if EXCUSED.iter().any(|(f, _)| *f == rel) {
            continue;
        }
        checked += 1;
        for (n, code) in code_lines(&path).iter().enumerate() {
            for word in BANNED {
                if code.contains(word) {
                    problems.push(format!("{rel}:{}: {word}", n + 1));
                }
            }
        }
    }
    assert!(checked >= 30, "checked only {checked} files");
    assert!(problems.is_empty(), "impure code:\n{}", problems.join("\n"));
}

/// The production code does not depend on the simulator: the sim is a
/// shell around the same driver, never a part of it. (The binary's
/// `ordo sim` command runs it, so `src/main.rs` may name it.)
#[test]
fn src_does_not_import_sim() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.retain(|p| !p.ends_with("src/main.rs"));
    let mut problems = Vec::new();
    for path in &files {
        for (n, code) in code_lines(path).iter().enumerate() {
            if code.contains("crate::sim") || code.contains("ordo::sim") {
                problems.push(format!("{}:{}", rel(root, path), n + 1));
            }
        }
    }
    assert!(files.len() > 30, "checked only {} files", files.len());
    assert!(
        problems.is_empty(),
        "src/ uses sim/:\n{}",
        problems.join("\n")
    );
}

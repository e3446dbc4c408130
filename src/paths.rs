//! Lexical path helpers (no filesystem access, so planning stays pure).

use std::path::{Component, Path, PathBuf};

/// Removes `.` and resolves `..` lexically: `suites/../workloads/x.yaml` →
/// `workloads/x.yaml`.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// An absolute, normalized path, joined to the working directory if relative.
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return normalize(p);
    }
    let joined = std::env::current_dir()
        .map(|c| c.join(p))
        .unwrap_or_else(|_| p.to_path_buf());
    normalize(&joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_lexically() {
        assert_eq!(
            normalize(Path::new("suites/../workloads/x.yaml")),
            PathBuf::from("workloads/x.yaml")
        );
        assert_eq!(normalize(Path::new("./a/./b")), PathBuf::from("a/b"));
        assert_eq!(normalize(Path::new("../a")), PathBuf::from("../a"));
        assert_eq!(normalize(Path::new("/x/../y")), PathBuf::from("/y"));
    }
}

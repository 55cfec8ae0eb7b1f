//! Helpers shared by the command's integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// libufence.so of this build profile, built if needed (cargo cannot depend on a cdylib).
pub fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "ufence-preload"])
            .current_dir(root())
            .status()
            .expect("cargo build");
        assert!(status.success());
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_ufence"));
        let lib = exe.parent().unwrap().join("libufence.so");
        assert!(lib.is_file(), "{}", lib.display());
        lib
    })
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

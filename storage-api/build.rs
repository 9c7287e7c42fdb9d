//! Records the version of the compiler that builds this crate, for the
//! fingerprint in the header of dynamic storage plugins (`ffi` module):
//! a plugin and the daemon must be built by the same rustc.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = Command::new(&rustc)
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    match version {
        Some(v) => println!("cargo:rustc-env=STORAGE_API_RUSTC_VERSION={v}"),
        None => {
            // Without the version the fingerprint would be meaningless:
            // refuse to build rather than produce plugins that cannot be
            // checked.
            eprintln!("storage-api: cannot run `{} -V`", rustc.to_string_lossy());
            std::process::exit(1);
        }
    }
}

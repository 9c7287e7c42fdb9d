//! Test fixture for uftpd's plugin loader: a library that looks like a
//! storage plugin but whose header does not match the daemon.
//!
//! Which mismatch is chosen by the environment variable
//! `UFTPD_TEST_BAD_HEADER` of the loading process:
//!
//! * `abi` (or unset): plugin API major version one higher than uftpd's;
//! * `toolchain`: built "with" another rustc (`rustc 1.0.0 (fake)`);
//! * `magic`: not a uftpd plugin header at all.
//!
//! uftpd must refuse each with one line naming the file; it never gets
//! past the header, so the vtable behind it is never used.

use storage_api::ffi::{self, PluginHeader, StoragePluginV1};
use storage_api::{StorageBackend, StorageDescriptor};

fn construct(_: &dyn Fn(&str) -> Option<String>) -> Result<Box<dyn StorageBackend>, String> {
    Err("the bad-header fixture must never be constructed".into())
}

static DESCRIPTOR: StorageDescriptor = StorageDescriptor {
    name: "bad-header",
    version: env!("CARGO_PKG_VERSION"),
    description: "test fixture with a mismatching header",
    constructor: construct,
};
static PLUGIN: StoragePluginV1 = StoragePluginV1::new(&DESCRIPTOR);

/// The `rustc -V` line this fixture pretends to be built with.
pub const FAKE_RUSTC: &str = "rustc 1.0.0 (fake 2015-05-15)";

static WRONG_ABI: PluginHeader = PluginHeader {
    abi_major: ffi::ABI_MAJOR + 1,
    ..PluginHeader::storage(&PLUGIN)
};

static WRONG_TOOLCHAIN: PluginHeader = PluginHeader {
    fingerprint: ffi::fingerprint(FAKE_RUSTC, ffi::API_CRATE_VERSION),
    rustc_version: ffi::padded::<{ ffi::RUSTC_VERSION_LEN }>(FAKE_RUSTC),
    ..PluginHeader::storage(&PLUGIN)
};

static WRONG_MAGIC: PluginHeader = PluginHeader {
    magic: *b"NOTUFTPD",
    ..PluginHeader::storage(&PLUGIN)
};

/// The header symbol, as `export_storage_plugin!` would define it, but
/// returning a mismatching header.
// SAFETY (no_mangle): this fixture defines the plugin symbol once.
#[unsafe(no_mangle)]
pub extern "C" fn uftpd_plugin_header() -> *const PluginHeader {
    match std::env::var("UFTPD_TEST_BAD_HEADER").as_deref() {
        Ok("toolchain") => &WRONG_TOOLCHAIN,
        Ok("magic") => &WRONG_MAGIC,
        _ => &WRONG_ABI,
    }
}

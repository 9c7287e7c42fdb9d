//! Plugin selection: which storage backend and which command-port
//! authorizer serve this daemon, and loading of dynamic plugins.
//!
//! Static plugins register themselves (`inventory`) from their own crates;
//! this module only makes sure the default set is linked in and looks
//! plugins up by the names the configuration gives. No concrete plugin
//! type is named anywhere in the daemon.
//!
//! Dynamic storage plugins are shared libraries listed in PLUGINS. Each is
//! loaded at most once per process (the daemon at startup, every session
//! process before it takes on the user's identity), only from files and
//! directories that nobody but root or the daemon's user can change, and
//! never unloaded. Its header is checked (`storage_api::ffi`) before
//! anything else in it is used; after that its backend is selectable by
//! name like a static one.

use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use auth_api::{CommandAuthorizer, Settings};
use storage_api::StorageBackend;
use storage_api::ffi::{DynamicStoragePlugin, HEADER_SYMBOL, HEADER_SYMBOL_NUL, PluginHeader};

use crate::config::Config;

// The default plugin set, linked statically.
use uftpd_acl as _;
use uftpd_chacha20poly1305 as _;
use uftpd_plain_auth as _;
use uftpd_posix as _;
use uftpd_zstd as _;

/// Errors selecting or loading a plugin; each is one line for the log.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No plugin of that name is available.
    #[error("unknown {role} plugin '{name}' (available: {available})")]
    Unknown {
        /// Role.
        role: &'static str,
        /// Requested name.
        name: String,
        /// What exists.
        available: String,
    },
    /// The plugin refused its configuration.
    #[error("{role} plugin '{name}': {reason}")]
    Config {
        /// Role.
        role: &'static str,
        /// Name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A plugin library could not be loaded or was refused.
    #[error("cannot load plugin library {path}: {reason}")]
    Load {
        /// The library as configured.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A dynamic storage plugin loaded into this process.
#[derive(Debug, Clone)]
struct Loaded {
    /// The path as configured.
    path: PathBuf,
    plugin: DynamicStoragePlugin,
}

/// The dynamic plugins of this process. Their libraries are never
/// unloaded, so the `'static` data the plugins point to stays valid.
static DYNAMIC: Mutex<Vec<Loaded>> = Mutex::new(Vec::new());

fn dynamic() -> Vec<Loaded> {
    DYNAMIC.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Loads the plugin libraries in `paths` that this process has not loaded
/// yet. Stops at the first library that cannot be loaded or is refused.
pub fn load_dynamic(paths: &[PathBuf]) -> Result<(), PluginError> {
    let mut loaded = DYNAMIC.lock().unwrap_or_else(|e| e.into_inner());
    for path in paths {
        if loaded.iter().any(|l| &l.path == path) {
            continue;
        }
        let plugin = load_one(path).map_err(|reason| PluginError::Load {
            path: path.clone(),
            reason,
        })?;
        let clash = if storage_api::lookup(plugin.name()).is_some() {
            Some("a built-in storage plugin".to_string())
        } else {
            loaded
                .iter()
                .find(|l| l.plugin.name().eq_ignore_ascii_case(plugin.name()))
                .map(|l| l.path.display().to_string())
        };
        if let Some(other) = clash {
            return Err(PluginError::Load {
                path: path.clone(),
                reason: format!(
                    "its storage plugin is called '{}', like {other}",
                    plugin.name()
                ),
            });
        }
        tracing::debug!(
            "Loaded storage plugin '{}' {} from {}",
            plugin.name(),
            plugin.version(),
            path.display()
        );
        loaded.push(Loaded {
            path: path.clone(),
            plugin,
        });
    }
    Ok(())
}

/// Checks, opens and verifies one library.
fn load_one(path: &Path) -> Result<DynamicStoragePlugin, String> {
    let real = check_admin_owned(path)?;
    // SAFETY: loading a library runs its initialisers. That is why only
    // files that nobody but root or the daemon's user can change are
    // loaded (checked above, on the resolved path that is opened here).
    // RTLD_NOW: unresolved symbols fail here, not in the middle of a
    // session.
    let lib = unsafe {
        libloading::os::unix::Library::open(
            Some(&real),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
        )
    }
    .map_err(|e| format!("{e}"))?;
    // Never unloaded: every pointer into the library stays valid.
    let lib = ManuallyDrop::new(lib);
    // SAFETY: a library defining this reserved symbol declares it as
    // `extern "C" fn() -> *const PluginHeader` (export_storage_plugin!).
    let header_fn =
        unsafe { lib.get::<unsafe extern "C" fn() -> *const PluginHeader>(HEADER_SYMBOL_NUL) }
            .map_err(|_| format!("not a uftpd plugin (it has no symbol {HEADER_SYMBOL})"))?;
    // SAFETY: the function takes no arguments and returns a pointer to a
    // static of the library; it is called the way the plugin declares it.
    let header = unsafe { header_fn() };
    // SAFETY: the pointer comes from the plugin's header symbol and the
    // library is never unloaded (ManuallyDrop above); from_header reads
    // the magic number before anything else.
    unsafe { DynamicStoragePlugin::from_header(header) }.map_err(|e| e.to_string())
}

/// Resolves `path` and checks that the file and every directory above it
/// belong to root or the daemon's user and that nobody else may write
/// them (a world-writable directory with the sticky bit, like /tmp, is
/// accepted: others cannot replace what they do not own in it). Returns
/// the resolved path.
pub fn check_admin_owned(path: &Path) -> Result<PathBuf, String> {
    if !path.is_absolute() {
        return Err("not an absolute path".into());
    }
    let real = std::fs::canonicalize(path).map_err(|e| short_io(&e))?;
    let euid = nix::unistd::geteuid().as_raw();
    let md = std::fs::metadata(&real).map_err(|e| short_io(&e))?;
    if !md.is_file() {
        return Err(format!("{} is not a regular file", real.display()));
    }
    check_entry(&real, &md, euid, false)?;
    for dir in real.ancestors().skip(1) {
        let md =
            std::fs::metadata(dir).map_err(|e| format!("{}: {}", dir.display(), short_io(&e)))?;
        check_entry(dir, &md, euid, true)?;
    }
    Ok(real)
}

fn check_entry(p: &Path, md: &std::fs::Metadata, euid: u32, dir: bool) -> Result<(), String> {
    let owners = if euid == 0 {
        "root".to_string()
    } else {
        format!("root or uid {euid} (the uftpd user)")
    };
    if md.uid() != 0 && md.uid() != euid {
        return Err(format!(
            "{} is owned by uid {}, not by {owners}",
            p.display(),
            md.uid()
        ));
    }
    let mode = md.mode();
    let sticky_dir = dir && mode & libc::S_ISVTX != 0;
    if mode & 0o022 != 0 && !sticky_dir {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        return Err(format!(
            "{} is writable by {who} (mode {:04o}); plugin libraries and their directories must be writable by {owners} only",
            p.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

/// An OS error without Rust's ` (os error N)` suffix.
fn short_io(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Builds the storage backend called `name` (static or loaded).
pub fn storage_backend(
    name: &str,
    settings: &dyn Fn(&str) -> Option<String>,
) -> Result<Box<dyn StorageBackend>, PluginError> {
    let config_error = |reason| PluginError::Config {
        role: "storage",
        name: name.to_string(),
        reason,
    };
    if let Some(d) = storage_api::lookup(name) {
        return (d.constructor)(settings).map_err(config_error);
    }
    let dynamic = dynamic();
    if let Some(l) = dynamic
        .iter()
        .find(|l| l.plugin.name().eq_ignore_ascii_case(name))
    {
        return l.plugin.construct(settings).map_err(config_error);
    }
    Err(PluginError::Unknown {
        role: "storage",
        name: name.to_string(),
        available: storage_api::registered()
            .map(|d| d.name)
            .chain(dynamic.iter().map(|l| l.plugin.name()))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Daemon startup: loads PLUGINS and builds the configured storage backend
/// once, so that a bad library, name or plugin setting stops startup with
/// one line instead of failing every session. Returns the settings the
/// backend read (environment or file), for the session processes.
pub fn check_storage(config: &Config) -> Result<BTreeMap<String, String>, PluginError> {
    load_dynamic(&config.plugins)?;
    for l in dynamic() {
        tracing::info!(
            "Plugin library {}: storage plugin '{}' {}",
            l.path.display(),
            l.plugin.name(),
            l.plugin.version()
        );
    }
    let read = Mutex::new(BTreeMap::new());
    let lookup = |name: &str| {
        let value = config.setting(name);
        if let Some(v) = &value {
            read.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string(), v.clone());
        }
        value
    };
    let backend = storage_backend(&config.storage_backend, &lookup)?;
    let origin = list()
        .into_iter()
        .find(|p| p.role == "storage" && p.name.eq_ignore_ascii_case(backend.name()))
        .map(|p| format!("{} {}, {}", p.name, p.version, p.origin))
        .unwrap_or_else(|| backend.name().to_string());
    tracing::info!("Storage backend: {origin}");
    drop(backend);
    Ok(read.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Builds the command-port authorizer called `name`.
pub fn authorizer(
    name: &str,
    settings: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Box<dyn CommandAuthorizer>, PluginError> {
    let d = auth_api::lookup(name).ok_or_else(|| PluginError::Unknown {
        role: "authorizer",
        name: name.to_string(),
        available: auth_api::registered()
            .map(|d| d.name)
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    (d.constructor)(&Settings::new(settings)).map_err(|reason| PluginError::Config {
        role: "authorizer",
        name: name.to_string(),
        reason,
    })
}

/// One available plugin, for `--list-plugins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// `storage`, `authorizer` or `codec`.
    pub role: &'static str,
    /// Configuration name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// `static`, or the library it was loaded from.
    pub origin: String,
}

/// Every plugin available in this process (static ones and the dynamic
/// ones loaded so far), by role and name.
pub fn list() -> Vec<PluginInfo> {
    let info = |role, name: &str, version: &str, origin: String| PluginInfo {
        role,
        name: name.to_string(),
        version: version.to_string(),
        origin,
    };
    let mut out: Vec<PluginInfo> = storage_api::registered()
        .map(|d| info("storage", d.name, d.version, "static".into()))
        .chain(dynamic().into_iter().map(|l| {
            info(
                "storage",
                l.plugin.name(),
                l.plugin.version(),
                l.path.display().to_string(),
            )
        }))
        .chain(
            auth_api::registered().map(|d| info("authorizer", d.name, d.version, "static".into())),
        )
        .chain(codec_api::registered().map(|d| info("codec", d.name, d.version, "static".into())))
        .collect();
    let rank = |role: &str| match role {
        "storage" => 0,
        "authorizer" => 1,
        _ => 2,
    };
    out.sort_by(|a, b| {
        (rank(a.role), a.name.to_ascii_lowercase())
            .cmp(&(rank(b.role), b.name.to_ascii_lowercase()))
    });
    out
}

/// `uftpd --list-plugins`: loads PLUGINS and prints one line per plugin.
pub fn print_list(config: &Config) -> Result<(), PluginError> {
    load_dynamic(&config.plugins)?;
    for p in list() {
        println!(
            "{:<10} {:<20} {:<8} {}",
            p.role, p.name, p.version, p.origin
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("uftpd-plugins-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("tmpdir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        d
    }

    #[test]
    fn static_defaults_are_listed() {
        let l = list();
        assert!(
            l.contains(&PluginInfo {
                role: "storage",
                name: "posix".into(),
                version: crate::VERSION.into(),
                origin: "static".into()
            }),
            "{l:?}"
        );
        assert!(
            l.iter()
                .any(|p| p.role == "authorizer" && p.name == "plain")
        );
    }

    #[test]
    fn unknown_names_list_what_exists() {
        let e = storage_backend("nosuch", &|_| None)
            .err()
            .expect("unknown")
            .to_string();
        assert!(
            e.starts_with("unknown storage plugin 'nosuch' (available: posix"),
            "{e}"
        );
        let e = authorizer("nosuch", &|_| None)
            .expect_err("unknown")
            .to_string();
        assert!(e.starts_with("unknown authorizer plugin 'nosuch'"), "{e}");
        assert!(storage_backend("POSIX", &|_| None).is_ok());
    }

    #[test]
    fn unsafe_locations_are_refused() {
        let d = tmpdir("owner");
        let lib = d.join("libx.so");
        std::fs::write(&lib, b"not a library").expect("write");
        std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        // an ordinary file in a safe place passes the location check...
        assert!(check_admin_owned(&lib).is_ok());
        // ...but is no library
        let e = load_dynamic(std::slice::from_ref(&lib))
            .expect_err("not a library")
            .to_string();
        assert!(
            e.starts_with(&format!("cannot load plugin library {}: ", lib.display())),
            "{e}"
        );

        std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        let e = check_admin_owned(&lib).expect_err("group-writable");
        assert!(e.contains("is writable by its group (mode 0664)"), "{e}");
        std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o644)).expect("chmod");

        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = check_admin_owned(&lib).expect_err("dir world-writable");
        assert!(
            e.starts_with(&format!(
                "{} is writable by group and others (mode 0777)",
                d.display()
            )),
            "{e}"
        );
        // with the sticky bit, others cannot replace our file
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        assert!(check_admin_owned(&lib).is_ok());

        assert_eq!(
            check_admin_owned(Path::new("relative/libx.so")).err(),
            Some("not an absolute path".to_string())
        );
        let e = check_admin_owned(&d.join("missing.so")).expect_err("missing");
        assert_eq!(e, "No such file or directory");
        assert!(
            check_admin_owned(&d)
                .expect_err("dir")
                .ends_with("is not a regular file")
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}

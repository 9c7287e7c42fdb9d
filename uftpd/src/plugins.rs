//! Plugin selection: which storage backend and which command-port
//! authorizer serve this daemon.
//!
//! Plugins register themselves (`inventory`) from their own crates; this
//! module only makes sure the default set is linked in and looks plugins up
//! by the names the configuration gives. No concrete plugin type is named
//! anywhere in the daemon.

use auth_api::{CommandAuthorizer, Settings};
use storage_api::StorageBackend;

// The default plugin set, linked statically.
use uftpd_acl as _;
use uftpd_plain_auth as _;
use uftpd_posix as _;

/// Errors selecting a plugin.
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
}

/// Builds the storage backend called `name`.
pub fn storage_backend(
    name: &str,
    settings: &dyn Fn(&str) -> Option<String>,
) -> Result<Box<dyn StorageBackend>, PluginError> {
    let d = storage_api::lookup(name).ok_or_else(|| PluginError::Unknown {
        role: "storage",
        name: name.to_string(),
        available: storage_api::registered()
            .map(|d| d.name)
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    (d.constructor)(settings).map_err(|reason| PluginError::Config {
        role: "storage",
        name: name.to_string(),
        reason,
    })
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

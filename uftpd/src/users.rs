//! User and group resolution: who a session runs as.
//!
//! The `group` field of a transfer request (PROTOCOL section 3):
//! * absent, empty or `NONE`: the user's primary group and all the groups
//!   the OS gives the user;
//! * one group `g`: `g` as primary group, plus the user's groups;
//! * `g1:g2:...`: `g1` as primary group and exactly these groups.
//!
//! With UFTP_ENFORCE_OS_GIDS every requested group must be one the user has
//! in the OS (primary or supplementary); otherwise any existing group may
//! be used. Unknown groups are always refused.

use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User, getgrouplist};
use storage_api::Identity;

/// Why an identity cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// No such login.
    #[error("unknown user '{0}'")]
    UnknownUser(String),
    /// uid 0 is never served.
    #[error("user '{0}' has uid 0: sessions never run as root")]
    Root(String),
    /// No such group.
    #[error("unknown group '{0}'")]
    UnknownGroup(String),
    /// The user is not in the requested group.
    #[error("user '{user}' is not a member of group '{group}'")]
    NotMember {
        /// User name.
        user: String,
        /// Group name.
        group: String,
    },
    /// The daemon is unprivileged and can only act as itself.
    #[error(
        "uftpd is not running as root and can only serve its own user '{me}', not '{requested}'"
    )]
    NotSelf {
        /// The daemon's user.
        me: String,
        /// The requested user.
        requested: String,
    },
    /// Lookup failure in the user database.
    #[error("user database lookup failed: {0}")]
    Lookup(String),
}

/// Looks up a user by name.
pub fn lookup_user(name: &str) -> Result<Option<User>, IdentityError> {
    if name.is_empty() || name.contains('\0') {
        return Ok(None);
    }
    User::from_name(name).map_err(|e| IdentityError::Lookup(e.to_string()))
}

/// The name of the user this process runs as.
pub fn current_user_name() -> String {
    match User::from_uid(Uid::current()) {
        Ok(Some(u)) => u.name,
        _ => Uid::current().to_string(),
    }
}

fn group_gid(name: &str) -> Result<u32, IdentityError> {
    if name.contains('\0') {
        return Err(IdentityError::UnknownGroup(name.to_string()));
    }
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(IdentityError::UnknownGroup(name.to_string())),
        Err(e) => Err(IdentityError::Lookup(e.to_string())),
    }
}

/// All groups the OS gives `user` (primary included).
pub fn os_groups(user: &User) -> Result<Vec<u32>, IdentityError> {
    let cname =
        CString::new(user.name.as_str()).map_err(|e| IdentityError::Lookup(e.to_string()))?;
    let mut gids: Vec<u32> = getgrouplist(&cname, user.gid)
        .map_err(|e| IdentityError::Lookup(e.to_string()))?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    if !gids.contains(&user.gid.as_raw()) {
        gids.push(user.gid.as_raw());
    }
    Ok(gids)
}

/// Resolves the identity a session for `user` with the requested `group`
/// specification runs as.
///
/// `privileged` tells whether the daemon can switch users; when it cannot,
/// only the daemon's own user is accepted and the process's current groups
/// are used.
pub fn resolve_identity(
    user: &str,
    group_spec: Option<&str>,
    enforce_os_gids: bool,
    privileged: bool,
) -> Result<Identity, IdentityError> {
    let u = lookup_user(user)?.ok_or_else(|| IdentityError::UnknownUser(user.to_string()))?;
    if u.uid.is_root() {
        return Err(IdentityError::Root(user.to_string()));
    }
    if !privileged {
        if u.uid != Uid::current() {
            return Err(IdentityError::NotSelf {
                me: current_user_name(),
                requested: user.to_string(),
            });
        }
        let groups = nix::unistd::getgroups()
            .map(|g| g.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_default();
        return Ok(Identity {
            user: u.name,
            uid: u.uid.as_raw(),
            gid: Gid::current().as_raw(),
            groups,
            home: u.dir,
        });
    }
    let own = os_groups(&u)?;
    let spec = group_spec.map(str::trim).unwrap_or("");
    let requested: Vec<&str> = if spec.is_empty() || spec.eq_ignore_ascii_case("NONE") {
        Vec::new()
    } else {
        spec.split(':')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    };
    let check = |name: &str| -> Result<u32, IdentityError> {
        let gid = group_gid(name)?;
        if enforce_os_gids && !own.contains(&gid) {
            return Err(IdentityError::NotMember {
                user: user.to_string(),
                group: name.to_string(),
            });
        }
        Ok(gid)
    };
    let (gid, groups) = match requested.as_slice() {
        [] => (u.gid.as_raw(), own.clone()),
        [one] => {
            let g = check(one)?;
            let mut groups = own.clone();
            if !groups.contains(&g) {
                groups.push(g);
            }
            (g, groups)
        }
        [first, ..] => {
            let primary = check(first)?;
            let mut groups = Vec::new();
            for name in &requested {
                let g = check(name)?;
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
            (primary, groups)
        }
    };
    Ok(Identity {
        user: u.name,
        uid: u.uid.as_raw(),
        gid,
        groups,
        home: u.dir,
    })
}

/// The home directory to start in: `$HOME` when it exists, else `/`.
pub fn start_home(identity: &Identity) -> PathBuf {
    if identity.home.is_dir() {
        identity.home.clone()
    } else {
        PathBuf::from("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_and_root() {
        assert_eq!(
            resolve_identity("no-such-user-xyz", None, true, true),
            Err(IdentityError::UnknownUser("no-such-user-xyz".into()))
        );
        assert_eq!(
            resolve_identity("root", None, true, true),
            Err(IdentityError::Root("root".into()))
        );
    }

    #[test]
    fn nobody_default_and_groups() {
        let Ok(Some(nobody)) = User::from_name("nobody") else {
            return;
        };
        let id = resolve_identity("nobody", Some("NONE"), true, true).expect("nobody");
        assert_eq!(id.uid, nobody.uid.as_raw());
        assert_eq!(id.gid, nobody.gid.as_raw());
        assert!(id.groups.contains(&id.gid));
        let e = resolve_identity("nobody", Some("no-such-group-xyz"), true, true);
        assert_eq!(
            e,
            Err(IdentityError::UnknownGroup("no-such-group-xyz".into()))
        );
        // root's group exists but nobody is not in it
        let e = resolve_identity("nobody", Some("root"), true, true);
        assert!(matches!(e, Err(IdentityError::NotMember { .. })), "{e:?}");
        let id = resolve_identity("nobody", Some("root"), false, true).expect("not enforced");
        assert_eq!(id.gid, 0);
    }
}

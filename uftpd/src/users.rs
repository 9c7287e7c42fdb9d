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

use std::collections::HashMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Most identities an [`IdentityCache`] holds; when full, the expired
/// entries go, and if it is still full, all of them.
const MAX_CACHED_IDENTITIES: usize = 4096;

/// Identities resolved for recent transfer requests (USER_CACHE_SECONDS).
///
/// A lookup in the user database is a file scan, or a round trip to
/// LDAP/sssd, that the command port must not run on its async threads; a
/// burst of requests for one user (a client fetching many files, an Auth
/// server retrying) then costs one lookup. Only successful resolutions are
/// kept, so a user or group created a moment ago is found at once; one
/// removed keeps working for at most the lifetime of its entry, as behind
/// nscd or sssd.
#[derive(Debug)]
pub struct IdentityCache {
    ttl: Duration,
    entries: Mutex<HashMap<(String, String), (Instant, Identity)>>,
}

impl IdentityCache {
    /// A cache keeping entries for `ttl`; zero keeps nothing.
    pub fn new(ttl: Duration) -> Self {
        IdentityCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (Instant, Identity)>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (single insert/remove calls): keep using it.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The identity resolved for `user` and the group specification
    /// `group` within the last `ttl`, if any.
    pub fn get(&self, user: &str, group: &str) -> Option<Identity> {
        self.get_at(user, group, Instant::now())
    }

    fn get_at(&self, user: &str, group: &str, now: Instant) -> Option<Identity> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut entries = self.entries();
        let key = (user.to_string(), group.to_string());
        match entries.get(&key) {
            Some((at, id)) if now.saturating_duration_since(*at) < self.ttl => Some(id.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers what `user` with `group` resolved to.
    pub fn put(&self, user: &str, group: &str, identity: &Identity) {
        self.put_at(user, group, identity, Instant::now());
    }

    fn put_at(&self, user: &str, group: &str, identity: &Identity, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= MAX_CACHED_IDENTITIES {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
            if entries.len() >= MAX_CACHED_IDENTITIES {
                entries.clear();
            }
        }
        entries.insert(
            (user.to_string(), group.to_string()),
            (now, identity.clone()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some_identity(uid: u32) -> Identity {
        Identity {
            user: format!("u{uid}"),
            uid,
            gid: 100,
            groups: vec![100, 200],
            home: PathBuf::from("/home/u"),
        }
    }

    #[test]
    fn identity_cache_keeps_entries_for_its_ttl_per_user_and_group() {
        let c = IdentityCache::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let a = some_identity(1000);
        c.put_at("alice", "", &a, t0);
        assert_eq!(
            c.get_at("alice", "", t0 + Duration::from_secs(29)),
            Some(a.clone())
        );
        // Another group specification is another resolution.
        assert_eq!(c.get_at("alice", "staff", t0), None);
        assert_eq!(c.get_at("bob", "", t0), None);
        // Expired: gone, and stays gone.
        assert_eq!(c.get_at("alice", "", t0 + Duration::from_secs(30)), None);
        assert_eq!(c.get_at("alice", "", t0), None);
    }

    #[test]
    fn identity_cache_of_zero_seconds_keeps_nothing() {
        let c = IdentityCache::new(Duration::ZERO);
        let t0 = Instant::now();
        c.put_at("alice", "", &some_identity(1000), t0);
        assert_eq!(c.get_at("alice", "", t0), None);
        assert!(c.entries().is_empty());
    }

    #[test]
    fn identity_cache_is_bounded() {
        let c = IdentityCache::new(Duration::from_secs(30));
        let t0 = Instant::now();
        for i in 0..MAX_CACHED_IDENTITIES {
            c.put_at(&format!("u{i}"), "", &some_identity(i as u32 + 1), t0);
        }
        assert_eq!(c.entries().len(), MAX_CACHED_IDENTITIES);
        // Full of live entries: emptied, then the new one kept.
        c.put_at(
            "late",
            "",
            &some_identity(99_999),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(c.entries().len(), 1);
        assert!(c.get_at("late", "", t0 + Duration::from_secs(1)).is_some());
        // Full with expired entries among live ones: only the expired go.
        let c = IdentityCache::new(Duration::from_secs(30));
        c.put_at("keep", "", &some_identity(7), t0 + Duration::from_secs(20));
        for i in 0..MAX_CACHED_IDENTITIES - 1 {
            c.put_at(&format!("v{i}"), "", &some_identity(i as u32 + 1), t0);
        }
        let later = t0 + Duration::from_secs(31);
        c.put_at("newest", "", &some_identity(8), later);
        assert_eq!(c.entries().len(), 2);
        assert!(c.get_at("keep", "", later).is_some());
        assert!(c.get_at("newest", "", later).is_some());
    }

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

//! Dropping privileges in the session process.
//!
//! Runs before any thread exists and before any user path is opened:
//! supplementary groups, then real/effective/saved gid, then real/effective/
//! saved uid (so no saved root id remains and the kernel clears every
//! capability), then `PR_SET_NO_NEW_PRIVS`. Each step is verified.

use nix::unistd::{Gid, Uid, getresgid, getresuid, setgroups, setresgid, setresuid};
use storage_api::Identity;

/// Why the identity switch failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivDropError {
    /// A system call failed.
    #[error("{call} failed: {err}")]
    Call {
        /// The call.
        call: &'static str,
        /// The error.
        err: nix::Error,
    },
    /// The ids after the switch are not the requested ones.
    #[error("identity check failed after switching to uid {uid}: {what}")]
    Verify {
        /// Target uid.
        uid: u32,
        /// What did not match.
        what: String,
    },
}

fn call<T>(name: &'static str, r: nix::Result<T>) -> Result<T, PrivDropError> {
    r.map_err(|err| PrivDropError::Call { call: name, err })
}

/// Sets no_new_privs: nothing exec'd later can gain privileges.
pub fn no_new_privs() -> Result<(), PrivDropError> {
    call(
        "prctl(PR_SET_NO_NEW_PRIVS)",
        nix::sys::prctl::set_no_new_privs(),
    )
}

/// Switches this (single-threaded) process to `id` for good.
pub fn become_user(id: &Identity) -> Result<(), PrivDropError> {
    if id.uid == 0 {
        return Err(PrivDropError::Verify {
            uid: 0,
            what: "refusing to run a session as root".into(),
        });
    }
    let groups: Vec<Gid> = id.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    let gid = Gid::from_raw(id.gid);
    let uid = Uid::from_raw(id.uid);
    call("setgroups", setgroups(&groups))?;
    call("setresgid", setresgid(gid, gid, gid))?;
    call("setresuid", setresuid(uid, uid, uid))?;
    no_new_privs()?;

    let r = call("getresuid", getresuid())?;
    if (r.real, r.effective, r.saved) != (uid, uid, uid) {
        return Err(PrivDropError::Verify {
            uid: id.uid,
            what: format!("uids are {}/{}/{}", r.real, r.effective, r.saved),
        });
    }
    let g = call("getresgid", getresgid())?;
    if (g.real, g.effective, g.saved) != (gid, gid, gid) {
        return Err(PrivDropError::Verify {
            uid: id.uid,
            what: format!("gids are {}/{}/{}", g.real, g.effective, g.saved),
        });
    }
    let mut have: Vec<u32> = call("getgroups", nix::unistd::getgroups())?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    let mut want = id.groups.clone();
    have.sort_unstable();
    have.dedup();
    want.sort_unstable();
    want.dedup();
    if have != want {
        return Err(PrivDropError::Verify {
            uid: id.uid,
            what: format!("groups are {have:?}, wanted {want:?}"),
        });
    }
    // Getting root back must be impossible now.
    if setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err(PrivDropError::Verify {
            uid: id.uid,
            what: "setresuid(0) still succeeds".into(),
        });
    }
    // SAFETY: setting environment variables is only unsound with other
    // threads reading the environment; this runs before the session
    // process starts any thread.
    unsafe {
        std::env::set_var("HOME", &id.home);
        std::env::set_var("USER", &id.user);
        std::env::set_var("LOGNAME", &id.user);
    }
    Ok(())
}

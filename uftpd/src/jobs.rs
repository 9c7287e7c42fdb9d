//! The job store: announced transfer requests waiting for, or in use by,
//! FTP sessions.
//!
//! Counting (MAX_CONNECTIONS per user): a request that has not been used
//! yet counts one; a used request counts its running sessions. A one-time
//! request is removed when its session ends; a persistent one stays usable
//! until it expires. A request expires REQUEST_LIFETIME after it arrived,
//! but never while sessions still run on it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use storage_api::Identity;

use crate::request::TransferRequest;

/// A stored request with its resolved identity.
#[derive(Debug, Clone)]
pub struct Job {
    /// The request as announced.
    pub request: TransferRequest,
    /// Who the sessions run as.
    pub identity: Identity,
}

#[derive(Debug)]
struct Entry {
    job: Job,
    created: Instant,
    used: bool,
    sessions: u32,
}

impl Entry {
    fn weight(&self) -> u32 {
        if self.used { self.sessions } else { 1 }
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddError {
    /// MAX_CONNECTIONS reached.
    #[error("Too many active transfer requests / sessions for '{user}' - server limit is {limit}")]
    TooMany {
        /// User.
        user: String,
        /// Limit.
        limit: u32,
    },
    /// A pending request has the same secret.
    #[error("Duplicate secret - this is not allowed.")]
    Duplicate,
}

/// Why a login was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginError {
    /// No (unexpired) request with this secret.
    #[error("no matching transfer request found")]
    NotFound,
    /// The peer is not in the request's client-ip list.
    #[error("Rejecting connection for '{user}' from {peer}, allowed: {allowed}")]
    WrongIp {
        /// User.
        user: String,
        /// Peer address.
        peer: IpAddr,
        /// The allowed list as announced.
        allowed: String,
    },
    /// A one-time secret is in use.
    #[error("Session for these credentials is already running")]
    AlreadyRunning,
    /// MAX_CONNECTIONS reached.
    #[error("Too many active transfer requests / sessions for '{user}' - server limit is {limit}")]
    TooMany {
        /// User.
        user: String,
        /// Limit.
        limit: u32,
    },
}

/// The job store.
#[derive(Debug)]
pub struct JobStore {
    inner: Mutex<HashMap<String, Entry>>,
    lifetime: Duration,
    max_per_user: u32,
    check_ip: bool,
}

impl JobStore {
    /// A new empty store.
    pub fn new(lifetime: Duration, max_per_user: u32, check_ip: bool) -> Self {
        JobStore {
            inner: Mutex::new(HashMap::new()),
            lifetime,
            max_per_user,
            check_ip,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every mutation is a single insert/remove/field update), so a
        // poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn prune(&self, map: &mut HashMap<String, Entry>, now: Instant) -> usize {
        let before = map.len();
        map.retain(|_, e| {
            let keep = e.sessions > 0 || now.duration_since(e.created) < self.lifetime;
            if !keep {
                tracing::info!(
                    "Removing expired transfer request for '{}'",
                    e.job.request.user
                );
            }
            keep
        });
        before - map.len()
    }

    /// Removes expired requests; returns how many went.
    pub fn expire(&self) -> usize {
        let mut map = self.lock();
        self.prune(&mut map, Instant::now())
    }

    fn count(map: &HashMap<String, Entry>, user: &str) -> u32 {
        map.values()
            .filter(|e| e.job.request.user == user)
            .map(Entry::weight)
            .sum()
    }

    /// Stores a new request.
    pub fn add(&self, job: Job) -> Result<(), AddError> {
        let mut map = self.lock();
        self.prune(&mut map, Instant::now());
        if map.contains_key(&job.request.secret) {
            return Err(AddError::Duplicate);
        }
        let user = job.request.user.clone();
        if Self::count(&map, &user) >= self.max_per_user {
            return Err(AddError::TooMany {
                user,
                limit: self.max_per_user,
            });
        }
        map.insert(
            job.request.secret.clone(),
            Entry {
                job,
                created: Instant::now(),
                used: false,
                sessions: 0,
            },
        );
        Ok(())
    }

    /// Claims a session slot for a login with `secret` from `peer`.
    pub fn login(&self, secret: &str, peer: IpAddr) -> Result<Job, LoginError> {
        let mut map = self.lock();
        self.prune(&mut map, Instant::now());
        let (user, persistent, used, sessions) = match map.get(secret) {
            None => return Err(LoginError::NotFound),
            Some(e) => (
                e.job.request.user.clone(),
                e.job.request.persistent,
                e.used,
                e.sessions,
            ),
        };
        if let Some(e) = map.get(secret) {
            let peer = peer.to_canonical();
            if self.check_ip && !e.job.request.client_ips.contains(&peer) {
                return Err(LoginError::WrongIp {
                    user,
                    peer,
                    allowed: e.job.request.client_ip_raw.clone(),
                });
            }
        }
        if used && !persistent {
            return Err(LoginError::AlreadyRunning);
        }
        // The first login turns the pending request's weight of one into
        // one session: no change in the count. Later logins add one.
        if used && Self::count(&map, &user) >= self.max_per_user {
            return Err(LoginError::TooMany {
                user,
                limit: self.max_per_user,
            });
        }
        let e = map.get_mut(secret).ok_or(LoginError::NotFound)?;
        e.used = true;
        e.sessions = sessions + 1;
        Ok(e.job.clone())
    }

    /// Releases the slot of a session that ended.
    pub fn session_ended(&self, secret: &str) {
        let mut map = self.lock();
        let remove = match map.get_mut(secret) {
            Some(e) => {
                e.sessions = e.sessions.saturating_sub(1);
                e.sessions == 0 && !e.job.request.persistent
            }
            None => false,
        };
        if remove {
            map.remove(secret);
        }
    }

    /// Number of stored requests.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Sessions plus pending requests of one user.
    #[cfg(test)]
    pub fn user_count(&self, user: &str) -> u32 {
        Self::count(&self.lock(), user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{AccessLevel, TransferRequest};

    fn job(user: &str, secret: &str, persistent: bool) -> Job {
        Job {
            request: TransferRequest {
                client_ips: vec!["127.0.0.1".parse().expect("ip")],
                client_ip_raw: "127.0.0.1".into(),
                user: user.into(),
                secret: secret.into(),
                persistent,
                file: String::new(),
                streams: 1,
                compress: false,
                group: None,
                rate_limit: 0,
                key: None,
                includes: vec![],
                excludes: vec![],
                access: AccessLevel::Full,
            },
            identity: Identity {
                user: user.into(),
                uid: 1000,
                gid: 1000,
                groups: vec![],
                home: "/".into(),
            },
        }
    }

    fn lo() -> IpAddr {
        "127.0.0.1".parse().expect("ip")
    }

    #[test]
    fn one_time_secret() {
        let s = JobStore::new(Duration::from_secs(300), 4, true);
        s.add(job("u", "a", false)).expect("add");
        assert_eq!(s.add(job("u", "a", false)), Err(AddError::Duplicate));
        assert!(s.login("a", lo()).is_ok());
        assert_eq!(s.login("a", lo()).err(), Some(LoginError::AlreadyRunning));
        assert_eq!(s.user_count("u"), 1);
        s.session_ended("a");
        assert_eq!(s.login("a", lo()).err(), Some(LoginError::NotFound));
        assert_eq!(s.user_count("u"), 0);
    }

    #[test]
    fn persistent_and_limits() {
        let s = JobStore::new(Duration::from_secs(300), 3, true);
        s.add(job("u", "p", true)).expect("add");
        s.add(job("u", "q", false)).expect("add");
        assert!(s.login("p", lo()).is_ok());
        assert!(s.login("p", lo()).is_ok());
        assert_eq!(s.user_count("u"), 3);
        assert!(matches!(
            s.login("p", lo()),
            Err(LoginError::TooMany { .. })
        ));
        assert!(matches!(
            s.add(job("u", "r", false)),
            Err(AddError::TooMany { .. })
        ));
        assert!(s.add(job("other", "r", false)).is_ok(), "per user");
        s.session_ended("p");
        s.session_ended("p");
        assert_eq!(
            s.user_count("u"),
            1,
            "used persistent request without sessions"
        );
        assert!(s.login("p", lo()).is_ok(), "persistent stays usable");
    }

    #[test]
    fn ip_check_and_expiry() {
        let s = JobStore::new(Duration::from_millis(50), 4, true);
        s.add(job("u", "a", false)).expect("add");
        assert!(matches!(
            s.login("a", "10.0.0.9".parse().expect("ip")),
            Err(LoginError::WrongIp { .. })
        ));
        assert!(
            s.login("a", "::ffff:127.0.0.1".parse().expect("ip"))
                .is_ok(),
            "mapped v4"
        );
        s.add(job("u", "b", false)).expect("add");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(s.login("b", lo()).err(), Some(LoginError::NotFound));
        assert_eq!(s.len(), 1, "running session keeps its request");
    }
}

//! The job store: announced transfer requests waiting for, or in use by,
//! FTP sessions.
//!
//! Counting (MAX_CONNECTIONS per user): a request that has not been used
//! yet counts one; a used request counts its running sessions. A one-time
//! request is removed when its session ends; a persistent one stays usable
//! until it expires. A request expires REQUEST_LIFETIME after it arrived,
//! but never while sessions still run on it.

use std::collections::{HashMap, VecDeque};
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
    /// Older than the lifetime while sessions still ran on it.
    expired: bool,
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
    inner: Mutex<Inner>,
    lifetime: Duration,
    max_per_user: u32,
    check_ip: bool,
}

/// The store's state. Every operation is O(1) (amortised): the per-user
/// counts are kept up to date instead of summed, and expiry walks the
/// requests in arrival order instead of scanning them all.
#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<String, Entry>,
    /// Sessions plus pending requests per user.
    counts: HashMap<String, u32>,
    /// (arrival, secret) in arrival order; entries of requests already gone
    /// are skipped when they come up.
    order: VecDeque<(Instant, String)>,
}

impl Inner {
    fn count(&self, user: &str) -> u32 {
        self.counts.get(user).copied().unwrap_or(0)
    }

    fn adjust(&mut self, user: &str, delta: i64) {
        if delta == 0 {
            return;
        }
        let n = self.counts.entry(user.to_string()).or_insert(0);
        *n = u32::try_from(i64::from(*n) + delta).unwrap_or(0);
        if *n == 0 {
            self.counts.remove(user);
        }
    }

    fn remove(&mut self, secret: &str) {
        if let Some(e) = self.jobs.remove(secret) {
            let w = e.weight();
            self.adjust(&e.job.request.user, -i64::from(w));
        }
    }
}

impl JobStore {
    /// A new empty store.
    pub fn new(lifetime: Duration, max_per_user: u32, check_ip: bool) -> Self {
        JobStore {
            inner: Mutex::new(Inner::default()),
            lifetime,
            max_per_user,
            check_ip,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each operation completes its few updates under the lock without
        // calling out, so even a poisoned lock holds a consistent state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops requests older than the lifetime that no session uses; those
    /// still in use are marked and go when their last session ends.
    fn prune(&self, inner: &mut Inner, now: Instant) -> usize {
        let mut removed = 0;
        while let Some((created, _)) = inner.order.front() {
            if now.duration_since(*created) < self.lifetime {
                break;
            }
            let Some((created, secret)) = inner.order.pop_front() else {
                break;
            };
            let (sessions, user) = match inner.jobs.get_mut(&secret) {
                // The same secret may have been announced again later.
                Some(e) if e.created == created => {
                    e.expired = true;
                    (e.sessions, e.job.request.user.clone())
                }
                _ => continue,
            };
            if sessions == 0 {
                tracing::info!("Removing expired transfer request for '{user}'");
                inner.remove(&secret);
                removed += 1;
            }
        }
        removed
    }

    /// Removes expired requests; returns how many went.
    pub fn expire(&self) -> usize {
        let mut inner = self.lock();
        self.prune(&mut inner, Instant::now())
    }

    /// Stores a new request.
    pub fn add(&self, job: Job) -> Result<(), AddError> {
        let mut inner = self.lock();
        let now = Instant::now();
        self.prune(&mut inner, now);
        if inner.jobs.contains_key(&job.request.secret) {
            return Err(AddError::Duplicate);
        }
        let user = job.request.user.clone();
        if inner.count(&user) >= self.max_per_user {
            return Err(AddError::TooMany {
                user,
                limit: self.max_per_user,
            });
        }
        let secret = job.request.secret.clone();
        inner.order.push_back((now, secret.clone()));
        inner.jobs.insert(
            secret,
            Entry {
                job,
                created: now,
                used: false,
                sessions: 0,
                expired: false,
            },
        );
        inner.adjust(&user, 1);
        Ok(())
    }

    /// Claims a session slot for a login with `secret` from `peer`.
    pub fn login(&self, secret: &str, peer: IpAddr) -> Result<Job, LoginError> {
        let mut inner = self.lock();
        self.prune(&mut inner, Instant::now());
        let (user, persistent, used) = match inner.jobs.get(secret) {
            None => return Err(LoginError::NotFound),
            Some(e) if e.expired && e.sessions == 0 => return Err(LoginError::NotFound),
            Some(e) => {
                let peer = peer.to_canonical();
                if self.check_ip && !e.job.request.client_ips.contains(&peer) {
                    return Err(LoginError::WrongIp {
                        user: e.job.request.user.clone(),
                        peer,
                        allowed: e.job.request.client_ip_raw.clone(),
                    });
                }
                (e.job.request.user.clone(), e.job.request.persistent, e.used)
            }
        };
        if used && !persistent {
            return Err(LoginError::AlreadyRunning);
        }
        // The first login turns the pending request's weight of one into
        // one session: no change in the count. Later logins add one.
        if used && inner.count(&user) >= self.max_per_user {
            return Err(LoginError::TooMany {
                user,
                limit: self.max_per_user,
            });
        }
        let e = inner.jobs.get_mut(secret).ok_or(LoginError::NotFound)?;
        let before = e.weight();
        e.used = true;
        e.sessions += 1;
        let delta = i64::from(e.weight()) - i64::from(before);
        let job = e.job.clone();
        inner.adjust(&user, delta);
        Ok(job)
    }

    /// Releases the slot of a session that ended.
    pub fn session_ended(&self, secret: &str) {
        let mut inner = self.lock();
        let (user, remove) = match inner.jobs.get_mut(secret) {
            Some(e) if e.sessions > 0 => {
                e.sessions -= 1;
                let done = e.sessions == 0 && (!e.job.request.persistent || e.expired);
                (e.job.request.user.clone(), done)
            }
            _ => return,
        };
        // A used request weighs its sessions: one fewer now.
        inner.adjust(&user, -1);
        if remove {
            inner.remove(secret);
        }
    }

    /// Number of stored requests.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Sessions plus pending requests of one user.
    #[cfg(test)]
    pub fn user_count(&self, user: &str) -> u32 {
        self.lock().count(user)
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
                compress: crate::request::Compression::None,
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

    #[test]
    fn expired_in_use_goes_with_its_last_session() {
        let s = JobStore::new(Duration::from_millis(30), 4, true);
        s.add(job("u", "p", true)).expect("add");
        s.login("p", lo()).expect("login");
        s.login("p", lo()).expect("second session");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(s.expire(), 0, "sessions still run on it");
        assert!(s.login("p", lo()).is_ok(), "usable while in use");
        assert_eq!(s.user_count("u"), 3);
        for _ in 0..3 {
            s.session_ended("p");
        }
        assert_eq!(s.len(), 0, "gone with its last session");
        assert_eq!(s.user_count("u"), 0);
        assert_eq!(s.login("p", lo()).err(), Some(LoginError::NotFound));
        // the secret may be announced again and lives its own life
        s.add(job("u", "p", false)).expect("re-announced");
        assert_eq!(s.user_count("u"), 1);
    }

    #[test]
    fn counts_stay_consistent_over_many_requests() {
        let s = JobStore::new(Duration::from_secs(300), 1000, true);
        for i in 0..500 {
            s.add(job(&format!("u{}", i % 7), &format!("s{i}"), i % 2 == 0))
                .expect("add");
        }
        for i in (0..500).step_by(3) {
            s.login(&format!("s{i}"), lo()).expect("login");
            s.session_ended(&format!("s{i}"));
        }
        let total: u32 = (0..7).map(|u| s.user_count(&format!("u{u}"))).sum();
        // one-time requests that were used are gone; used persistent ones
        // without sessions weigh nothing; the rest weigh one each
        let used: Vec<usize> = (0..500).step_by(3).collect();
        let expected = 500 - used.len() as u32;
        assert_eq!(total, expected);
    }
}

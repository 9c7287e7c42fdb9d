//! Failure state shared by the caller and the per-stream workers.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::stream::Abort;

/// First error of any worker, plus the handles to break every stream.
pub(crate) struct Shared {
    first: Mutex<Option<(io::ErrorKind, String)>>,
    failed: AtomicBool,
    aborts: Vec<Arc<dyn Abort>>,
}

impl Shared {
    pub(crate) fn new(aborts: Vec<Arc<dyn Abort>>) -> Self {
        Shared {
            first: Mutex::new(None),
            failed: AtomicBool::new(false),
            aborts,
        }
    }

    /// Records the first failure (of stream `stream`, if known) and breaks
    /// all streams so that no worker stays blocked.
    pub(crate) fn fail(&self, stream: Option<usize>, e: &io::Error) {
        {
            let mut g = self.first.lock().unwrap_or_else(|p| p.into_inner());
            if g.is_none() {
                let msg = match stream {
                    Some(i) => format!("data stream {i}: {e}"),
                    None => e.to_string(),
                };
                *g = Some((e.kind(), msg));
            }
        }
        self.failed.store(true, Ordering::SeqCst);
        self.abort_all();
    }

    pub(crate) fn abort_all(&self) {
        for a in &self.aborts {
            a.abort();
        }
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The recorded failure as a fresh `io::Error` (or `fallback` if no
    /// worker recorded one).
    pub(crate) fn error(&self, fallback: &str) -> io::Error {
        let g = self.first.lock().unwrap_or_else(|p| p.into_inner());
        match &*g {
            Some((kind, msg)) => io::Error::new(*kind, msg.clone()),
            None => io::Error::new(io::ErrorKind::BrokenPipe, fallback.to_owned()),
        }
    }
}

/// Writes all of `bufs` with vectored writes (one `writev` per call on a
/// socket or file), retrying short writes; `what` names the data in the
/// error of a writer that accepts nothing.
pub(crate) fn write_all_vectored(
    w: &mut dyn std::io::Write,
    mut bufs: &mut [std::io::IoSlice<'_>],
    what: &str,
) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind, IoSlice};
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => {
                return Err(Error::new(
                    ErrorKind::WriteZero,
                    format!("failed to write {what}"),
                ));
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

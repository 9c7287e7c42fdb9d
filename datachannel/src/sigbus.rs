//! Reading a mapped file in user space without dying of SIGBUS.
//!
//! A codec (a cipher, a compressor) has to read the bytes it transforms.
//! Reading them straight from a mapping of the file saves the copy of
//! every byte that `read(2)` into a buffer costs (on the benchmark machine
//! 15-20 % of an AES download's CPU, half of a ChaCha20-Poly1305 one's
//! overhead). The catch: if the file shrinks while it is mapped (another
//! process truncates it), touching a page past the new end raises SIGBUS,
//! which kills the process.
//!
//! This module makes that a transfer error instead. Guarded mappings are
//! registered in a fixed table; a SIGBUS handler looks the faulting
//! address up, and if it lies in a guarded mapping it maps an anonymous
//! zero page over the faulting page (so the interrupted instruction reads
//! zeros when it is restarted) and marks the mapping as damaged. The
//! sender checks the mark after each batch and fails the transfer; the
//! zeros already encoded never end a stream normally (the channel is
//! aborted, without codec trailers). A fault anywhere else is handed to
//! the handler that was installed before (Rust's stack-overflow reporter,
//! or the default action), exactly as without this module.
//!
//! The handler only reads atomics and calls `mmap(2)`; `mmap` is not in
//! POSIX's list of async-signal-safe functions, but on Linux it is a plain
//! system call without locks in user space (glibc's wrapper only sets
//! errno), which is what matters inside a handler.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Guarded mappings that can exist at once (a session has a few: one
/// window per transfer being sent).
const SLOTS: usize = 64;

struct Slot {
    used: AtomicBool,
    /// Address range `[start, end)`; `start == 0` while not (yet) valid.
    start: AtomicUsize,
    end: AtomicUsize,
    hit: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            used: AtomicBool::new(false),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            hit: AtomicBool::new(false),
        }
    }
}

static REGISTRY: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// The page size, for the handler.
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// The SIGBUS disposition before ours (`Copy` C struct, read-only after
/// installation).
struct Previous(libc::sigaction);

// SAFETY: written once before the handler is installed, then only read
// (by the handler and never mutated); it holds plain C data.
unsafe impl Sync for Previous {}
// SAFETY: as above.
unsafe impl Send for Previous {}

static PREVIOUS: OnceLock<Previous> = OnceLock::new();
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Installs the handler (once per process). Returns whether guarded
/// mappings can be used.
pub(crate) fn install() -> bool {
    *INSTALLED.get_or_init(|| {
        PAGE.store(crate::mapped::page_size() as usize, Ordering::Relaxed);
        // SAFETY: an all-zero sigaction is a valid value of this C struct.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: reading the current disposition into `old`.
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) } != 0 {
            return false;
        }
        if PREVIOUS.set(Previous(old)).is_err() {
            return false;
        }
        // SAFETY: as above.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_sigbus as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `act.sa_mask` is a valid sigset to initialise.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        // SAFETY: installs a handler that is a valid `extern "C"` function
        // with the SA_SIGINFO signature and stays valid for the process.
        unsafe { libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) == 0 }
    })
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for slot in &REGISTRY {
        let start = slot.start.load(Ordering::Acquire);
        if start == 0 || addr < start || addr >= slot.end.load(Ordering::Acquire) {
            continue;
        }
        let at = addr & !(page - 1);
        // SAFETY: replaces one page inside a registered mapping, which
        // this process owns and only ever reads, with a private zero page;
        // MAP_FIXED over our own mapping unmaps nothing else. The
        // mapping's owner unmaps the whole range later, this page
        // included.
        let r = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if r != libc::MAP_FAILED {
            slot.hit.store(true, Ordering::Release);
            return;
        }
        break;
    }
    chain(sig, info, ctx);
}

/// Hands a fault that is not ours to the previous disposition.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS.get().map(|p| p.0);
    match prev {
        Some(p)
            if p.sa_sigaction != libc::SIG_DFL
                && p.sa_sigaction != libc::SIG_IGN
                && p.sa_flags & libc::SA_SIGINFO != 0 =>
        {
            // SAFETY: the previous handler was installed with SA_SIGINFO,
            // so this is its signature.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(p.sa_sigaction) };
            f(sig, info, ctx);
        }
        Some(p) if p.sa_sigaction != libc::SIG_DFL && p.sa_sigaction != libc::SIG_IGN => {
            // SAFETY: a handler installed without SA_SIGINFO takes the
            // signal number only.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(p.sa_sigaction) };
            f(sig);
        }
        _ => {
            // Default action: restore it and return; the faulting
            // instruction runs again and the fault kills the process, as
            // it would have without us.
            // SAFETY: an all-zero sigaction with SIG_DFL (0) is the
            // default disposition.
            let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
            dfl.sa_sigaction = libc::SIG_DFL;
            // SAFETY: sigaction is async-signal-safe.
            unsafe { libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut()) };
        }
    }
}

/// A registered address range; unregistered when dropped (before the
/// mapping is unmapped).
#[derive(Debug)]
pub(crate) struct Guard {
    slot: usize,
}

impl Guard {
    /// Registers `[start, start + len)`; `None` when the handler is not
    /// installed or the table is full (the caller then reads instead).
    pub(crate) fn register(start: usize, len: usize) -> Option<Guard> {
        if !install() || start == 0 {
            return None;
        }
        for (k, slot) in REGISTRY.iter().enumerate() {
            if slot
                .used
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                slot.hit.store(false, Ordering::Relaxed);
                slot.end.store(start.saturating_add(len), Ordering::Release);
                slot.start.store(start, Ordering::Release);
                return Some(Guard { slot: k });
            }
        }
        None
    }

    /// Whether a page of the range faulted (the file shrank under it).
    pub(crate) fn hit(&self) -> bool {
        REGISTRY[self.slot].hit.load(Ordering::Acquire)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let slot = &REGISTRY[self.slot];
        slot.start.store(0, Ordering::Release);
        slot.end.store(0, Ordering::Release);
        slot.used.store(false, Ordering::Release);
    }
}

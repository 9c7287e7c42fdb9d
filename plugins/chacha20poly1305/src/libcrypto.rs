//! The system's OpenSSL libcrypto as a second engine for the AEAD, loaded
//! at run time.
//!
//! Why: ring's ChaCha20-Poly1305 (BoringSSL's AVX2 assembly) seals at about
//! 1.8 GB/s on one core of an AVX-512 machine where OpenSSL's own routines
//! reach 3.0-3.5 GB/s, and ring only seals in place, so every record costs
//! a copy of its plaintext as well; libcrypto encrypts straight from the
//! caller's bytes (a mapped file) into the record.
//!
//! How: `dlopen` of `libcrypto.so.3` (then `libcrypto.so.1.1`, at least
//! 1.1.1), nothing at build time: a machine without OpenSSL, or with one
//! that fails the self-test below, gets ring. The library is opened once
//! per process, on the first stream that asks for it, and never closed.
//!
//! Every record is one EVP call sequence on a context that keeps the
//! stream key: set the nonce, the AAD, encrypt or decrypt, finish, get or
//! check the tag. Before the engine is used, [`load`] checks it against
//! RFC 8439's test vector and against ring on records of several sizes in
//! a row (the per-record re-initialisation included), and that it refuses
//! a bad tag; any difference and the engine is not used.

use std::ffi::{c_int, c_uchar, c_ulong, c_void};
use std::ptr::{self, NonNull};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::TAG_LEN;

/// Shared object names tried in this order.
const SONAMES: [&str; 2] = ["libcrypto.so.3", "libcrypto.so.1.1"];

/// `OPENSSL_VERSION_NUMBER` of 1.1.1, the oldest release accepted (its
/// EVP interface for this AEAD is the one used here).
const MIN_VERSION: c_ulong = 0x1010_100f;

/// `EVP_CTRL_AEAD_GET_TAG` and `EVP_CTRL_AEAD_SET_TAG` (evp.h).
const CTRL_GET_TAG: c_int = 0x10;
const CTRL_SET_TAG: c_int = 0x11;

type CtxNewFn = unsafe extern "C" fn() -> *mut c_void;
type CtxFreeFn = unsafe extern "C" fn(*mut c_void);
type CipherFn = unsafe extern "C" fn() -> *const c_void;
type InitFn = unsafe extern "C" fn(
    *mut c_void,
    *const c_void,
    *mut c_void,
    *const c_uchar,
    *const c_uchar,
    c_int,
) -> c_int;
type UpdateFn =
    unsafe extern "C" fn(*mut c_void, *mut c_uchar, *mut c_int, *const c_uchar, c_int) -> c_int;
type FinalFn = unsafe extern "C" fn(*mut c_void, *mut c_uchar, *mut c_int) -> c_int;
type CtrlFn = unsafe extern "C" fn(*mut c_void, c_int, c_int, *mut c_void) -> c_int;
type VersionNumFn = unsafe extern "C" fn() -> c_ulong;
type VersionFn = unsafe extern "C" fn(c_int) -> *const std::ffi::c_char;

/// The entry points used, resolved once. The library handle is kept with
/// them (in a static that is never dropped), so they stay valid.
pub(crate) struct Api {
    _lib: libloading::Library,
    ctx_new: CtxNewFn,
    ctx_free: CtxFreeFn,
    cipher: CipherFn,
    init: InitFn,
    update: UpdateFn,
    final_: FinalFn,
    ctrl: CtrlFn,
    /// e.g. "OpenSSL 3.0.15 3 Sep 2024", for `check-config` and logs.
    pub(crate) version: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("libcrypto")
            .field("version", &self.version)
            .finish()
    }
}

static ENGINE: codec_api::CheckedEngine<Api> = codec_api::CheckedEngine::new();

/// The checked engine, loaded on first use; `Err` says why it cannot be
/// used (not installed, too old, or a failed self-test).
pub(crate) fn load() -> Result<&'static Api, &'static str> {
    ENGINE.get(open, self_test)
}

fn open() -> Result<Api, String> {
    let mut errors = Vec::new();
    for name in SONAMES {
        // SAFETY: loading libcrypto runs its ELF constructors, which only
        // set up OpenSSL's own state (no code of ours runs, and it defines
        // no symbol this process uses: ring's are prefixed).
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return resolve(lib, name),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Err(format!("no OpenSSL libcrypto ({})", errors.join("; ")))
}

fn resolve(lib: libloading::Library, name: &str) -> Result<Api, String> {
    /// Copies the function pointer of `sym` out of `lib`.
    ///
    /// SAFETY (of the callers): `T` must be the C signature of `sym` as
    /// declared in OpenSSL's headers (1.1.1 and 3.x agree for all of
    /// these); the pointer is used only while `lib` is loaded, which is
    /// forever (the `Api` holding it lives in a static).
    unsafe fn get<T: Copy>(lib: &libloading::Library, so: &str, sym: &str) -> Result<T, String> {
        // SAFETY: see the function's contract above.
        unsafe { lib.get::<T>(sym.as_bytes()) }
            .map(|s| *s)
            .map_err(|e| format!("{so}: no {sym}: {e}"))
    }
    // SAFETY: each type below is the exact prototype of the symbol in
    // <openssl/evp.h> / <openssl/crypto.h>.
    unsafe {
        let version_num: VersionNumFn = get(&lib, name, "OpenSSL_version_num")?;
        let version_str: VersionFn = get(&lib, name, "OpenSSL_version")?;
        let num = version_num();
        let text = version_str(0); // OPENSSL_VERSION
        let version = if text.is_null() {
            format!("OpenSSL {num:#x}")
        } else {
            std::ffi::CStr::from_ptr(text)
                .to_string_lossy()
                .into_owned()
        };
        if num < MIN_VERSION {
            return Err(format!("{name} is {version}; 1.1.1 or later is needed"));
        }
        Ok(Api {
            ctx_new: get(&lib, name, "EVP_CIPHER_CTX_new")?,
            ctx_free: get(&lib, name, "EVP_CIPHER_CTX_free")?,
            cipher: get(&lib, name, "EVP_chacha20_poly1305")?,
            init: get(&lib, name, "EVP_CipherInit_ex")?,
            update: get(&lib, name, "EVP_CipherUpdate")?,
            final_: get(&lib, name, "EVP_CipherFinal_ex")?,
            ctrl: get(&lib, name, "EVP_CIPHER_CTX_ctrl")?,
            version,
            _lib: lib,
        })
    }
}

/// One direction of one stream: an `EVP_CIPHER_CTX` holding the stream key.
pub(crate) struct EvpAead {
    api: &'static Api,
    ctx: NonNull<c_void>,
    encrypt: bool,
}

// SAFETY: an EVP_CIPHER_CTX may be used from any thread as long as one
// thread at a time does (OpenSSL's threading rules); `EvpAead` is owned
// and every call takes `&mut self`.
unsafe impl Send for EvpAead {}

impl std::fmt::Debug for EvpAead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EvpAead")
    }
}

impl Drop for EvpAead {
    fn drop(&mut self) {
        // SAFETY: `ctx` came from EVP_CIPHER_CTX_new and is freed once;
        // freeing cleanses the key schedule it holds.
        unsafe { (self.api.ctx_free)(self.ctx.as_ptr()) }
    }
}

/// A record longer than a C `int` (never: records are at most 64 KiB).
fn c_len(n: usize) -> Result<c_int, ()> {
    c_int::try_from(n).map_err(|_| ())
}

impl EvpAead {
    /// A context for `key`, sealing (`encrypt`) or opening.
    pub(crate) fn new(api: &'static Api, key: &[u8; 32], encrypt: bool) -> Result<Self, String> {
        // SAFETY: plain constructor; a null return is checked.
        let ctx = NonNull::new(unsafe { (api.ctx_new)() })
            .ok_or("libcrypto: EVP_CIPHER_CTX_new failed")?;
        let aead = EvpAead { api, ctx, encrypt };
        // SAFETY: `ctx` is a fresh context, the cipher pointer comes from
        // EVP_chacha20_poly1305, `key` is 32 readable bytes (the cipher's
        // key length), a null IV and engine are allowed.
        let ok = unsafe {
            (api.init)(
                ctx.as_ptr(),
                (api.cipher)(),
                ptr::null_mut(),
                key.as_ptr(),
                ptr::null(),
                c_int::from(encrypt),
            )
        };
        if ok != 1 {
            // `aead` frees the context when dropped here.
            return Err(
                "libcrypto: ChaCha20-Poly1305 is not available (a FIPS-only configuration?)".into(),
            );
        }
        Ok(aead)
    }

    /// Starts a record: its nonce, then its AAD.
    fn start(&mut self, nonce: &[u8; 12], aad: &[u8]) -> Result<(), ()> {
        let mut outl: c_int = 0;
        // SAFETY: the context was initialised with the cipher and key in
        // `new`; a null cipher/key keeps them, `nonce` is the cipher's 12
        // byte IV, enc = -1 keeps the direction. An update with a null
        // output passes `aad` (readable for its length) as associated data.
        let ok = unsafe {
            (self.api.init)(
                self.ctx.as_ptr(),
                ptr::null(),
                ptr::null_mut(),
                ptr::null(),
                nonce.as_ptr(),
                -1,
            ) == 1
                && (self.api.update)(
                    self.ctx.as_ptr(),
                    ptr::null_mut(),
                    &mut outl,
                    aad.as_ptr(),
                    c_len(aad.len())?,
                ) == 1
        };
        if ok { Ok(()) } else { Err(()) }
    }

    /// Encrypts or decrypts `len` bytes from `src` to `dst` (which may be
    /// the same pointer) and finishes the record.
    ///
    /// SAFETY (of the callers): `src` readable and `dst` writable for
    /// `len` bytes, either identical or not overlapping.
    unsafe fn run(&mut self, src: *const u8, dst: *mut u8, len: usize) -> Result<(), ()> {
        let n = c_len(len)?;
        let mut outl: c_int = 0;
        let mut fin: c_int = 0;
        // SAFETY: the caller's contract; a stream cipher writes exactly
        // `len` bytes in the update and none in the final call (which gets
        // the end of `dst` as its output pointer all the same).
        let ok = unsafe {
            (self.api.update)(self.ctx.as_ptr(), dst, &mut outl, src, n) == 1
                && outl == n
                && (self.api.final_)(self.ctx.as_ptr(), dst.add(len), &mut fin) == 1
                && fin == 0
        };
        if ok { Ok(()) } else { Err(()) }
    }

    /// Seals one record: `input` encrypted into `msg` (same length), or
    /// `msg` in place when `input` is `None`; returns the tag.
    pub(crate) fn seal(
        &mut self,
        nonce: &[u8; 12],
        aad: &[u8],
        input: Option<&[u8]>,
        msg: &mut [u8],
    ) -> Result<[u8; TAG_LEN], ()> {
        if !self.encrypt || input.is_some_and(|i| i.len() != msg.len()) {
            return Err(());
        }
        self.start(nonce, aad)?;
        let src = input.map_or(msg.as_ptr(), <[u8]>::as_ptr);
        // SAFETY: `msg` is writable for its length, and `src` is either
        // `msg` itself or `input`, a shared borrow of the same length that
        // cannot overlap the exclusive borrow `msg`.
        unsafe { self.run(src, msg.as_mut_ptr(), msg.len())? };
        let mut tag = [0u8; TAG_LEN];
        self.tag_ctrl(CTRL_GET_TAG, &mut tag)?;
        Ok(tag)
    }

    /// `EVP_CTRL_AEAD_GET_TAG` (writes `tag`) or `EVP_CTRL_AEAD_SET_TAG`
    /// (reads it) on the context.
    fn tag_ctrl(&mut self, op: c_int, tag: &mut [u8; TAG_LEN]) -> Result<(), ()> {
        // SAFETY: both operations access exactly `TAG_LEN` bytes at the
        // pointer, which `tag` provides, and keep no pointer to it.
        let ok = unsafe {
            (self.api.ctrl)(
                self.ctx.as_ptr(),
                op,
                TAG_LEN as c_int,
                tag.as_mut_ptr().cast(),
            )
        };
        if ok == 1 { Ok(()) } else { Err(()) }
    }

    /// Opens one record in place; `Err` if the tag does not verify (then
    /// `msg` holds garbage that must not be used).
    pub(crate) fn open(
        &mut self,
        nonce: &[u8; 12],
        aad: &[u8],
        msg: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), ()> {
        if self.encrypt {
            return Err(());
        }
        self.start(nonce, aad)?;
        let mut expected = *tag;
        self.tag_ctrl(CTRL_SET_TAG, &mut expected)?;
        let p = msg.as_mut_ptr();
        // SAFETY: in place: source and destination are the same writable
        // `msg`; the final call fails when the tag does not verify.
        unsafe { self.run(p, p, msg.len()) }
    }
}

/// Checks the engine before it is used: RFC 8439's AEAD test vector, then
/// records of several sizes sealed in a row on one context (so the
/// per-record nonce reset is exercised) against ring, opened again on
/// another, and a changed tag refused.
fn self_test(api: &'static Api) -> Result<(), String> {
    let fail = |what: &str| format!("libcrypto {}: self-test failed: {what}", api.version);
    let key: [u8; 32] = std::array::from_fn(|i| 0x80 + i as u8);
    let nonce = [
        0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
    ];
    let aad = [
        0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
    ];
    let text = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let mut msg = vec![0u8; text.len()];
    let mut seal = EvpAead::new(api, &key, true)?;
    let tag = seal
        .seal(&nonce, &aad, Some(text), &mut msg)
        .map_err(|()| fail("RFC 8439 vector: seal"))?;
    const CT16: [u8; 16] = [
        0xd3, 0x1a, 0x8d, 0x34, 0x64, 0x8e, 0x60, 0xdb, 0x7b, 0x86, 0xaf, 0xbc, 0x53, 0xef, 0x7e,
        0xc2,
    ];
    const TAG: [u8; 16] = [
        0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60, 0x06,
        0x91,
    ];
    if msg[..16] != CT16 || tag != TAG {
        return Err(fail("RFC 8439 vector: wrong ciphertext or tag"));
    }
    let ring_key = UnboundKey::new(&CHACHA20_POLY1305, &key)
        .map(LessSafeKey::new)
        .map_err(|_| fail("ring key"))?;
    let mut open = EvpAead::new(api, &key, false)?;
    for (r, len) in [0usize, 1, 63, 64, 1000, 65_536, 4097]
        .into_iter()
        .enumerate()
    {
        let nonce = crate::record_nonce(r as u64);
        let word = (len as u32).to_be_bytes();
        let plain: Vec<u8> = (0..len).map(|i| (i * 31 + r) as u8).collect();
        let mut ours = vec![0u8; len];
        // even records out of place, odd ones in place
        let tag = if r % 2 == 0 {
            seal.seal(&nonce, &word, Some(&plain), &mut ours)
        } else {
            ours.copy_from_slice(&plain);
            seal.seal(&nonce, &word, None, &mut ours)
        }
        .map_err(|()| fail("seal"))?;
        let mut theirs = plain.clone();
        let ring_tag = ring_key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(word),
                &mut theirs,
            )
            .map_err(|_| fail("ring seal"))?;
        if ours != theirs || tag[..] != *ring_tag.as_ref() {
            return Err(fail("a record differs from ring's"));
        }
        open.open(&nonce, &word, &mut ours, &tag)
            .map_err(|()| fail("a good record was refused"))?;
        if ours != plain {
            return Err(fail("a record did not open to its plaintext"));
        }
        let mut bad = tag;
        bad[r % TAG_LEN] ^= 1;
        if open.open(&nonce, &word, &mut theirs, &bad).is_ok() {
            return Err(fail("a changed tag was accepted"));
        }
    }
    Ok(())
}

//! Intel's ISA-L (`libisal.so.2`) as a second deflate engine, loaded at
//! run time.
//!
//! Why: ISA-L's deflate (igzip) compresses several times faster than zlib
//! at its low levels, to standard deflate that every gzip reader decodes.
//! On the benchmark's half-text file and one core, level 1 runs at about
//! 380 MiB/s (ratio 1.38) where zlib-rs's level 1 runs at about 120 (ratio
//! 1.31), and level 3 at about 215 MiB/s compresses about as well as zlib's
//! level 6 (1.53 vs 1.55) at several times its speed.
//!
//! How: `dlopen("libisal.so.2")` (Debian's `libisal2`), nothing at build
//! time; a machine without it, or with one that fails the self-test below,
//! compresses with zlib-rs as before. The library is opened once per
//! process and never closed. Compression goes through the fields at the
//! start of `struct isal_zstream` that ISA-L's header has kept in the same
//! place since its 2.x releases; the rest of the structure (its internal
//! state) is opaque here and gets a generous allocation.
//!
//! Only compression uses ISA-L. Its inflate was tried as the decoder and
//! dropped: when input arrives in small pieces it reads ahead past the end
//! of the deflate data into buffers of its own and does not always give
//! those bytes back, so where the gzip trailer starts becomes a guess, and
//! one guess accepted a stream cut inside an empty member's all-zero
//! trailer. zlib-rs reports exactly what it used.
//!
//! Each piece of the parallel gzip writer (see `parallel.rs`) is one
//! `isal_deflate_init`, an optional `isal_deflate_set_dict` (the 32 KiB
//! before the piece) and `isal_deflate` calls with a sync flush, or with
//! `end_of_stream` for the last piece: raw deflate, which the writer wraps
//! in its own gzip header and trailer. Before the engine is used, [`load`]
//! compresses a sample that way at every level it serves and checks that
//! zlib-rs inflates it back to the same bytes.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ffi::c_int;
use std::io;
use std::ptr::NonNull;

/// The shared object tried (ISA-L 2.x).
const SONAME: &str = "libisal.so.2";

/// Bytes allocated for `struct isal_zstream`: 82,384 in ISA-L 2.30 (most
/// of it the internal state's history buffer and hash heads); twice that
/// and more leaves room for later releases.
const STREAM_SIZE: usize = 256 * 1024;

/// Alignment of that allocation (ISA-L keeps its hash heads cache
/// aligned).
const STREAM_ALIGN: usize = 64;

/// `level_buf` sizes ISA-L asks for at levels 1, 2 and 3
/// (`ISAL_DEF_LVL1_DEFAULT` .. `ISAL_DEF_LVL3_DEFAULT` in 2.30), rounded up
/// to the next 64 KiB; a level buffer that is too small makes
/// `isal_deflate` fail, which the self-test would notice.
const LEVEL_BUF: [usize; 3] = [320 * 1024, 384 * 1024, 384 * 1024];

/// Levels ISA-L offers beyond stored (0): 1 to 3.
pub(crate) const LEVELS: std::ops::RangeInclusive<u32> = 1..=3;

/// `SYNC_FLUSH` and `IGZIP_DEFLATE` (raw deflate, no wrapper) of
/// `igzip_lib.h`.
const SYNC_FLUSH: u16 = 1;
const IGZIP_DEFLATE: u16 = 0;
/// `COMP_OK`.
const COMP_OK: c_int = 0;

/// The public head of `struct isal_zstream` (igzip_lib.h); the internal
/// state follows at offset 64.
#[repr(C)]
struct ZStreamHead {
    next_in: *const u8,
    avail_in: u32,
    total_in: u32,
    next_out: *mut u8,
    avail_out: u32,
    total_out: u32,
    hufftables: *mut u8,
    level: u32,
    level_buf_size: u32,
    level_buf: *mut u8,
    end_of_stream: u16,
    flush: u16,
    gzip_flag: u16,
    hist_bits: u16,
}

const _: () = assert!(std::mem::size_of::<ZStreamHead>() == 64);

type InitFn = unsafe extern "C" fn(*mut ZStreamHead);
type SetDictFn = unsafe extern "C" fn(*mut ZStreamHead, *const u8, u32) -> c_int;
type DeflateFn = unsafe extern "C" fn(*mut ZStreamHead) -> c_int;
/// The entry points used, resolved once; the library handle lives with
/// them in a static that is never dropped, so they stay valid.
pub(crate) struct Api {
    _lib: libloading::Library,
    init: InitFn,
    set_dict: SetDictFn,
    deflate: DeflateFn,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(SONAME)
    }
}

static ENGINE: codec_api::CheckedEngine<Api> = codec_api::CheckedEngine::new();

/// The checked engine, loaded on first use; `Err` says why it cannot be
/// used (not installed, or a failed self-test).
pub(crate) fn load() -> Result<&'static Api, &'static str> {
    ENGINE.get(open, self_test)
}

fn open() -> Result<Api, String> {
    // SAFETY: loading ISA-L runs no code of ours; its constructors only
    // set up its CPU dispatch.
    let lib = unsafe { libloading::Library::new(SONAME) }
        .map_err(|e| format!("no ISA-L ({SONAME}: {e})"))?;
    /// Copies the function pointer of `sym` out of `lib`.
    ///
    /// SAFETY (of the callers): `T` must be the C prototype of `sym` in
    /// igzip_lib.h; the pointer is used only while `lib` is loaded, which
    /// is forever (the `Api` holding both lives in a static).
    unsafe fn get<T: Copy>(lib: &libloading::Library, sym: &str) -> Result<T, String> {
        // SAFETY: see the function's contract above.
        unsafe { lib.get::<T>(sym.as_bytes()) }
            .map(|s| *s)
            .map_err(|e| format!("{SONAME}: no {sym}: {e}"))
    }
    // SAFETY: the types are the prototypes of igzip_lib.h: `void
    // isal_deflate_init(struct isal_zstream *)`, `int
    // isal_deflate_set_dict(struct isal_zstream *, uint8_t *, uint32_t)`
    // (the dictionary is only read), `int isal_deflate(struct isal_zstream
    // *)`.
    unsafe {
        Ok(Api {
            init: get(&lib, "isal_deflate_init")?,
            set_dict: get(&lib, "isal_deflate_set_dict")?,
            deflate: get(&lib, "isal_deflate")?,
            _lib: lib,
        })
    }
}

/// One compressor: the stream structure and its level buffer, reused for
/// every piece.
pub(crate) struct Deflater {
    api: &'static Api,
    stream: NonNull<ZStreamHead>,
    level: u32,
    level_buf: Vec<u8>,
}

// SAFETY: the structures belong to this value alone (ISA-L keeps no
// global state per stream), and every call takes `&mut self`.
unsafe impl Send for Deflater {}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("isal::Deflater")
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

/// Checked when compiling: a non-zero size, a power-of-two alignment.
const STREAM_LAYOUT: Layout = match Layout::from_size_align(STREAM_SIZE, STREAM_ALIGN) {
    Ok(l) => l,
    Err(_) => panic!("invalid ISA-L stream layout"),
};

impl Drop for Deflater {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.stream.as_ptr().cast(), STREAM_LAYOUT) }
    }
}

impl Deflater {
    /// A compressor at ISA-L `level` (1..=3).
    pub(crate) fn new(api: &'static Api, level: u32) -> io::Result<Self> {
        let Some(i) = LEVELS.contains(&level).then(|| (level - 1) as usize) else {
            return Err(io::Error::other(format!("ISA-L has no level {level}")));
        };
        // SAFETY: a non-zero size; the result is checked for null.
        let raw = unsafe { alloc_zeroed(STREAM_LAYOUT) };
        let stream = NonNull::new(raw.cast::<ZStreamHead>())
            .ok_or_else(|| io::Error::other("out of memory for an ISA-L stream"))?;
        Ok(Deflater {
            api,
            stream,
            level,
            level_buf: vec![0; LEVEL_BUF[i]],
        })
    }

    /// Compresses `piece` as raw deflate into `out` (appended), primed with
    /// `dict` (at most 32 KiB), ending with a sync flush (an empty stored
    /// block, byte-aligned, not final) or, when `last`, with the final
    /// block.
    pub(crate) fn run(
        &mut self,
        dict: &[u8],
        piece: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let too_big = || io::Error::other("ISA-L: piece larger than 4 GiB");
        let s = self.stream.as_ptr();
        // SAFETY: `s` points to STREAM_SIZE zeroed-or-initialised bytes
        // owned by `self`, more than ISA-L's structure; init only writes it.
        unsafe { (self.api.init)(s) };
        // SAFETY: the head fields are at the offsets of igzip_lib.h (the
        // `repr(C)` mirror above); `s` is valid and exclusively ours.
        let head = unsafe { &mut *s };
        head.level = self.level;
        head.level_buf = self.level_buf.as_mut_ptr();
        head.level_buf_size = u32::try_from(self.level_buf.len()).map_err(|_| too_big())?;
        head.gzip_flag = IGZIP_DEFLATE;
        head.hist_bits = 0; // the default, 32 KiB
        head.flush = SYNC_FLUSH;
        head.end_of_stream = u16::from(last);
        if !dict.is_empty() {
            let len = u32::try_from(dict.len()).map_err(|_| too_big())?;
            // SAFETY: `dict` is readable for `len` bytes; ISA-L copies it
            // into the stream's own buffer.
            let rc = unsafe { (self.api.set_dict)(s, dict.as_ptr(), len) };
            if rc != COMP_OK {
                return Err(io::Error::other(format!(
                    "ISA-L: setting the dictionary failed ({rc})"
                )));
            }
        }
        head.next_in = piece.as_ptr();
        head.avail_in = u32::try_from(piece.len()).map_err(|_| too_big())?;
        // Room for incompressible data (stored blocks) plus block headers;
        // grown below if ever not enough.
        out.reserve(piece.len() + piece.len() / 64 + 1024);
        loop {
            let start = out.len();
            let room = out.capacity() - start;
            head.next_out = out.spare_capacity_mut().as_mut_ptr().cast();
            head.avail_out = u32::try_from(room).map_err(|_| too_big())?;
            let before_in = head.avail_in;
            // SAFETY: next_in/avail_in describe the rest of `piece`
            // (readable), next_out/avail_out the spare capacity of `out`
            // (writable); the level buffer is the one set above and lives
            // in `self`.
            let rc = unsafe { (self.api.deflate)(s) };
            if rc != COMP_OK {
                return Err(io::Error::other(format!("ISA-L: deflate failed ({rc})")));
            }
            let written = room - head.avail_out as usize;
            // SAFETY: ISA-L wrote `written` bytes at the start of the
            // spare capacity.
            unsafe { out.set_len(start + written) };
            // Done when all input is taken and the call stopped with
            // output room to spare (ISA-L returns as soon as the input is
            // used up and the flush or final block written; a nearly full
            // buffer may hold back bytes of its own, so ask again then).
            if head.avail_in == 0 && head.avail_out >= 1024 {
                return Ok(());
            }
            if written == 0 && head.avail_in == before_in && head.avail_out > 0 {
                return Err(io::Error::other("ISA-L made no progress"));
            }
            out.reserve(64 * 1024);
        }
    }
}

/// Compresses a sample in two pieces (the second primed with the end of
/// the first, as the parallel writer does) at each level, and checks that
/// zlib-rs inflates it back unchanged.
fn self_test(api: &'static Api) -> Result<(), String> {
    use std::io::Read;
    let mut sample = Vec::with_capacity(200_000);
    let mut x: u32 = 0x1234_5678;
    for i in 0..2_000u32 {
        sample.extend_from_slice(format!("line {i} of the ISA-L self-test sample\n").as_bytes());
        for _ in 0..16 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            sample.push((x & 0xff) as u8);
        }
    }
    let cut = sample.len() / 3;
    let (a, b) = sample.split_at(cut);
    let dict = &a[a.len() - 32 * 1024..];
    for level in LEVELS {
        let fail = |what: String| format!("{SONAME}: self-test at level {level} failed: {what}");
        let mut d = Deflater::new(api, level).map_err(|e| fail(e.to_string()))?;
        let mut wire = Vec::new();
        d.run(&[], a, false, &mut wire)
            .map_err(|e| fail(e.to_string()))?;
        d.run(dict, b, true, &mut wire)
            .map_err(|e| fail(e.to_string()))?;
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&wire[..])
            .read_to_end(&mut back)
            .map_err(|e| fail(format!("zlib-rs cannot inflate its output: {e}")))?;
        if back != sample {
            return Err(fail("the output inflates to other bytes".into()));
        }
        if wire.len() >= sample.len() {
            return Err(fail("the output is not smaller".into()));
        }
    }
    Ok(())
}

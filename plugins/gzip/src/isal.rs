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
//! Decoding: ISA-L's inflate in its `ISAL_GZIP_NO_HDR_VER` mode. The
//! member header is parsed by `member.rs` (every RFC 1952 flag); ISA-L
//! inflates the deflate data and then reads the 8-byte trailer itself and
//! checks its CRC-32 and length. It holds at most 64 bits of look-ahead,
//! which at the end of the deflate data are the padding bits and the first
//! trailer bytes, so when it says the member is finished it has taken
//! exactly the member's bytes and not one more: the next member (or the
//! end of the stream) starts there. (A first attempt ran ISA-L on raw
//! deflate and looked for the trailer itself; where ISA-L had already
//! taken trailer bytes into its bit buffer that search had to guess, and
//! one guess accepted a stream cut inside an empty member's all-zero
//! trailer. This mode needs no guess.) Two fields beyond the public head
//! of `struct inflate_state` are used, `block_state` and `crc_flag`, at
//! offsets that have not moved in ISA-L 2.28-2.32.1; [`load_inflate`]
//! checks them on the loaded library before any decoding.
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
type InflateInitFn = unsafe extern "C" fn(*mut InflateHead);
type InflateFn = unsafe extern "C" fn(*mut InflateHead) -> c_int;

/// The public head of `struct inflate_state` (igzip_lib.h).
#[repr(C)]
struct InflateHead {
    next_out: *mut u8,
    avail_out: u32,
    total_out: u32,
    next_in: *const u8,
    read_in: u64,
    avail_in: u32,
    read_in_length: i32,
}

const _: () = assert!(std::mem::size_of::<InflateHead>() == 40);

/// Offset of `block_state` (`enum isal_block_state`, 4 bytes) in `struct
/// inflate_state`: after the head and the two Huffman tables, the same in
/// every ISA-L release from 2.28 to 2.32.1 on x86-64 (checked against
/// their headers). [`load_inflate`] confirms it on the loaded library.
const BLOCK_STATE_OFFSET: usize = 21_160;
/// Offset of `crc_flag` (uint32_t): after `block_state`, `dict_length`
/// and `bfinal`.
const CRC_FLAG_OFFSET: usize = BLOCK_STATE_OFFSET + 12;
/// `ISAL_BLOCK_NEW_HDR` and `ISAL_BLOCK_FINISH` of `enum isal_block_state`.
const BLOCK_NEW_HDR: u32 = 0;
const BLOCK_FINISH: u32 = 5;
/// `ISAL_GZIP_NO_HDR_VER`: no header parsing, CRC-32 of the output, and
/// the gzip trailer read and checked after the deflate data.
const GZIP_NO_HDR_VER: u32 = 6;
/// `ISAL_INCORRECT_CHECKSUM`.
const INCORRECT_CHECKSUM: c_int = -6;
/// Bytes allocated for `struct inflate_state` (87,368 in 2.28-2.32.1).
const INFLATE_SIZE: usize = 256 * 1024;

const _: () = assert!(
    CRC_FLAG_OFFSET + 4 <= INFLATE_SIZE
        && BLOCK_STATE_OFFSET.is_multiple_of(4)
        && CRC_FLAG_OFFSET.is_multiple_of(4)
);

/// The entry points used, resolved once; the library handle lives with
/// them in a static that is never dropped, so they stay valid.
pub(crate) struct Api {
    _lib: libloading::Library,
    init: InitFn,
    set_dict: SetDictFn,
    deflate: DeflateFn,
    inflate_init: InflateInitFn,
    inflate: InflateFn,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(SONAME)
    }
}

static ENGINE: codec_api::CheckedEngine<Api> = codec_api::CheckedEngine::new();
static INFLATE_CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();

/// The checked engine, loaded on first use; `Err` says why it cannot be
/// used (not installed, or a failed self-test).
pub(crate) fn load() -> Result<&'static Api, &'static str> {
    ENGINE.get(open, self_test)
}

/// The engine for decoding: [`load`] and, the first time, the inflate
/// self-test ([`inflate_self_test`]); `Err` says why ISA-L cannot decode.
pub(crate) fn load_inflate() -> Result<&'static Api, &'static str> {
    let api = load()?;
    INFLATE_CHECKED
        .get_or_init(|| inflate_self_test(api))
        .as_ref()
        .map_err(String::as_str)?;
    Ok(api)
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
    // *)`, `void isal_inflate_init(struct inflate_state *)`, `int
    // isal_inflate(struct inflate_state *)`.
    unsafe {
        Ok(Api {
            init: get(&lib, "isal_deflate_init")?,
            set_dict: get(&lib, "isal_deflate_set_dict")?,
            deflate: get(&lib, "isal_deflate")?,
            inflate_init: get(&lib, "isal_inflate_init")?,
            inflate: get(&lib, "isal_inflate")?,
            _lib: lib,
        })
    }
}

/// A zeroed, aligned block of memory for one of ISA-L's structures (of
/// which only the head is typed here), freed when dropped.
struct Zeroed<T> {
    ptr: NonNull<T>,
    layout: Layout,
}

impl<T> Zeroed<T> {
    /// Allocates `layout` (checked when compiling at each use: a non-zero
    /// size and a power-of-two alignment, at least `T`'s), zeroed; `what`
    /// names the structure in the out-of-memory error.
    fn new(layout: Layout, what: &str) -> io::Result<Self> {
        debug_assert!(layout.size() >= std::mem::size_of::<T>());
        // SAFETY: a non-zero size; the result is checked for null.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw.cast::<T>())
            .ok_or_else(|| io::Error::other(format!("out of memory for an ISA-L {what}")))?;
        Ok(Zeroed { ptr, layout })
    }

    fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T> Drop for Zeroed<T> {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr().cast(), self.layout) }
    }
}

/// One compressor: the stream structure and its level buffer, reused for
/// every piece.
pub(crate) struct Deflater {
    api: &'static Api,
    stream: Zeroed<ZStreamHead>,
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

impl Deflater {
    /// A compressor at ISA-L `level` (1..=3).
    pub(crate) fn new(api: &'static Api, level: u32) -> io::Result<Self> {
        let Some(i) = LEVELS.contains(&level).then(|| (level - 1) as usize) else {
            return Err(io::Error::other(format!("ISA-L has no level {level}")));
        };
        Ok(Deflater {
            api,
            stream: Zeroed::new(STREAM_LAYOUT, "stream")?,
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

/// One gzip member decompressor: the `inflate_state`, reused for every
/// member (the caller parses each member's header, ISA-L the rest).
pub(crate) struct Inflater {
    api: &'static Api,
    state: Zeroed<InflateHead>,
}

// SAFETY: as for `Deflater`: the state belongs to this value alone and
// every call takes `&mut self`.
unsafe impl Send for Inflater {}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("isal::Inflater")
    }
}

/// Checked when compiling, as `STREAM_LAYOUT`.
const INFLATE_LAYOUT: Layout = match Layout::from_size_align(INFLATE_SIZE, STREAM_ALIGN) {
    Ok(l) => l,
    Err(_) => panic!("invalid ISA-L inflate layout"),
};

/// What one [`Inflater::run`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// Input bytes taken (ISA-L keeps what it has taken but not decoded yet
    /// in its own buffers; all of it belongs to the member).
    pub(crate) consumed: usize,
    /// Output bytes written.
    pub(crate) produced: usize,
    /// The member is complete: deflate data decoded, all output handed
    /// out, trailer read and found correct. Exactly the member's bytes
    /// have been taken.
    pub(crate) finished: bool,
}

impl Inflater {
    /// A decompressor ready for the deflate data of a member. Use
    /// [`load_inflate`] for `api`: it has checked the offsets used here.
    pub(crate) fn new(api: &'static Api) -> io::Result<Self> {
        let state = Zeroed::new(INFLATE_LAYOUT, "inflate state")?;
        let mut i = Inflater { api, state };
        i.reset();
        Ok(i)
    }

    /// The `u32` at `offset` of the state: [`BLOCK_STATE_OFFSET`] or
    /// [`CRC_FLAG_OFFSET`], both inside the INFLATE_SIZE bytes of the
    /// allocation and 4-aligned (checked when compiling, above; the
    /// allocation is 64-aligned), so the pointer may be read and written.
    fn word(&self, offset: usize) -> *mut u32 {
        debug_assert!(offset == BLOCK_STATE_OFFSET || offset == CRC_FLAG_OFFSET);
        self.state
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(offset)
            .cast::<u32>()
    }

    fn block_state(&self) -> u32 {
        // SAFETY: see `word`; the state is initialised (`new` resets it).
        unsafe { self.word(BLOCK_STATE_OFFSET).read() }
    }

    fn crc_flag(&self) -> u32 {
        // SAFETY: as in `block_state`.
        unsafe { self.word(CRC_FLAG_OFFSET).read() }
    }

    /// Starts a new member's deflate data: `isal_inflate_init`, then
    /// `crc_flag` = `ISAL_GZIP_NO_HDR_VER` (init sets it to 0, raw
    /// deflate).
    pub(crate) fn reset(&mut self) {
        // SAFETY: `state` points to INFLATE_SIZE bytes owned by `self`,
        // more than ISA-L's structure; init only writes it. The write of
        // `crc_flag` is inside the allocation (see `word`).
        unsafe {
            (self.api.inflate_init)(self.state.as_ptr());
            self.word(CRC_FLAG_OFFSET).write(GZIP_NO_HDR_VER);
        }
    }

    /// Decodes from `input` into `out`. Errors are `InvalidData`: corrupt
    /// deflate data, or a trailer whose CRC-32 or length does not match.
    pub(crate) fn run(&mut self, input: &[u8], out: &mut [u8]) -> io::Result<Step> {
        let avail_in = u32::try_from(input.len()).unwrap_or(u32::MAX);
        let avail_out = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let s = self.state.as_ptr();
        {
            // SAFETY: the head fields are at the offsets of igzip_lib.h
            // (the `repr(C)` mirror above); `s` is valid and exclusively
            // ours for this block.
            let head = unsafe { &mut *s };
            head.next_in = input.as_ptr();
            head.avail_in = avail_in;
            head.next_out = out.as_mut_ptr();
            head.avail_out = avail_out;
        }
        // SAFETY: next_in/avail_in describe readable `input`,
        // next_out/avail_out writable `out`, both at most their lengths;
        // ISA-L keeps no pointer into either after returning (input it has
        // taken but not decoded goes to its own bit buffer or `tmp_in_buffer`).
        let rc = unsafe { (self.api.inflate)(s) };
        // SAFETY: as above; ISA-L has returned.
        let head = unsafe { &*s };
        match rc {
            0 => {}
            INCORRECT_CHECKSUM => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "CRC-32 or length mismatch in a member trailer (corrupt data)",
                ));
            }
            rc => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("corrupt deflate data (ISA-L error {rc})"),
                ));
            }
        }
        let finished = self.block_state() == BLOCK_FINISH;
        if finished && head.read_in_length >= 8 {
            // Cannot happen in this mode: the trailer check takes every
            // whole byte out of the bit buffer (what may stay are the
            // padding bits of the last deflate byte, before the trailer).
            // If a library ever kept a byte there, bytes after the member
            // would be lost, so refuse rather than guess.
            return Err(io::Error::other(
                "ISA-L kept input past the end of a gzip member",
            ));
        }
        // ISA-L never gives back more than this call's input in this mode
        // (see the check above); if a library ever did, say so instead of
        // miscounting.
        let consumed = avail_in
            .checked_sub(head.avail_in)
            .ok_or_else(|| io::Error::other("ISA-L gave back more input than it was given"))?;
        let produced = avail_out
            .checked_sub(head.avail_out)
            .ok_or_else(|| io::Error::other("ISA-L reported more output room than it had"))?;
        Ok(Step {
            consumed: consumed as usize,
            produced: produced as usize,
            finished,
        })
    }
}

/// A sample of text and noise (about 200 KB), compressible about 2:1.
fn sample() -> Vec<u8> {
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
    sample
}

/// Checks the inflate side on the loaded library before it decodes
/// anything: first the layout (the state is filled with a pattern, and
/// `isal_inflate_init` must write `ISAL_BLOCK_NEW_HDR` at
/// [`BLOCK_STATE_OFFSET`] and 0 at [`CRC_FLAG_OFFSET`], or those are not
/// the fields of this build), then the member reader on two gzip members
/// of the sample (compressed by zlib-rs) from input in uneven pieces, and
/// that a wrong CRC-32, a wrong length and a missing last byte are each
/// refused (which also shows that `crc_flag` selected the trailer check).
fn inflate_self_test(api: &'static Api) -> Result<(), String> {
    use std::io::{Read, Write};
    let fail = |what: String| format!("{SONAME}: inflate self-test failed: {what}");
    let inf = Inflater::new(api).map_err(|e| fail(e.to_string()))?;
    // SAFETY: the state's INFLATE_SIZE bytes are ours.
    unsafe { std::ptr::write_bytes(inf.state.as_ptr().cast::<u8>(), 0xa5, INFLATE_SIZE) };
    // SAFETY: as in `reset`; init only writes the state.
    unsafe { (api.inflate_init)(inf.state.as_ptr()) };
    if inf.block_state() != BLOCK_NEW_HDR || inf.crc_flag() != 0 {
        return Err(fail(
            "inflate_state layout differs (block_state or crc_flag not where expected)".into(),
        ));
    }
    let sample = sample();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&sample).map_err(|e| fail(e.to_string()))?;
    let member = enc.finish().map_err(|e| fail(e.to_string()))?;
    let decode = |wire: &[u8]| -> io::Result<Vec<u8>> {
        let inf = Inflater::new(api)?;
        let mut out = Vec::new();
        crate::member::IsalGzipReader::new(Box::new(Pieces::new(wire, 60_000)), inf)
            .read_to_end(&mut out)?;
        Ok(out)
    };
    let two = [member.as_slice(), member.as_slice()].concat();
    let out = decode(&two).map_err(|e| fail(format!("decoding failed: {e}")))?;
    if out.len() != 2 * sample.len()
        || out[..sample.len()] != *sample
        || out[sample.len()..] != *sample
    {
        return Err(fail(format!(
            "decoded {} bytes, not the sample twice",
            out.len()
        )));
    }
    let n = member.len();
    for (what, at, kind) in [
        ("a wrong CRC-32", n - 8, io::ErrorKind::InvalidData),
        ("a wrong length", n - 1, io::ErrorKind::InvalidData),
    ] {
        let mut bad = member.clone();
        bad[at] ^= 0x01;
        match decode(&bad) {
            Err(e) if e.kind() == kind => {}
            other => {
                return Err(fail(format!(
                    "{what} gave {other:?}",
                    other = other.map(|v| v.len())
                )));
            }
        }
    }
    match decode(&member[..n - 1]) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
        other => Err(fail(format!(
            "a member without its last byte gave {:?}",
            other.map(|v| v.len())
        ))),
    }
}

/// A reader that hands out its bytes in uneven pieces of 1 to `max` bytes
/// (deterministic): the inflate self-test's input, and the decoder tests'.
pub(crate) struct Pieces<'a> {
    data: &'a [u8],
    k: usize,
    max: usize,
}

impl<'a> Pieces<'a> {
    pub(crate) fn new(data: &'a [u8], max: usize) -> Self {
        Pieces { data, k: 0, max }
    }
}

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.k += 1;
        let n = (1 + self.k * 7919 % self.max)
            .min(self.data.len())
            .min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Compresses a sample in two pieces (the second primed with the end of
/// the first, as the parallel writer does) at each level, and checks that
/// zlib-rs inflates it back unchanged.
fn self_test(api: &'static Api) -> Result<(), String> {
    use std::io::Read;
    let sample = sample();
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

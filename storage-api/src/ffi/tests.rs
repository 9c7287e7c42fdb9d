//! The vtable round trip, in one process: a backend exported through the
//! C boundary and used through the daemon-side wrapper, exactly as after
//! `dlopen`, plus the header checks.

use super::*;
use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

/// An in-memory file tree: enough behaviour to see every call arrive.
#[derive(Debug, Default)]
struct Tree {
    files: BTreeMap<PathBuf, Vec<u8>>,
    dirs: BTreeMap<PathBuf, u32>,
    mtimes: BTreeMap<PathBuf, SystemTime>,
    finished: Vec<(PathBuf, usize)>,
    last_hints: Option<LayoutHints>,
    last_spec: Option<(PathBuf, bool, String, Vec<u32>)>,
}

#[derive(Debug, Clone)]
struct Mem {
    tree: Arc<Mutex<Tree>>,
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

impl Mem {
    fn tree(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn check(path: &Path) {
        if path == Path::new("boom") {
            panic!("boom requested");
        }
    }
}

impl StorageBackend for Mem {
    fn name(&self) -> &str {
        "mem"
    }
    fn open_session(&self, spec: &StorageSpec<'_>) -> Result<Box<dyn Storage>, StorageError> {
        self.tree().last_spec = Some((
            spec.base.to_path_buf(),
            spec.confined,
            spec.identity.user.clone(),
            spec.identity.groups.clone(),
        ));
        Ok(Box::new(self.clone()))
    }
}

struct MemWriter {
    mem: Mem,
    path: PathBuf,
    buf: Vec<u8>,
}

impl Write for MemWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf == b"fail" {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl WriteHandle for MemWriter {
    fn raw_fd(&self) -> Option<RawFd> {
        Some(77)
    }
    fn finish(self: Box<Self>) -> Result<(), StorageError> {
        let mut t = self.mem.tree();
        t.finished.push((self.path.clone(), self.buf.len()));
        t.files.insert(self.path.clone(), self.buf.clone());
        Ok(())
    }
}

struct MemReader(Cursor<Vec<u8>>);
impl Read for MemReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
impl ReadHandle for MemReader {}

fn file_stat(size: u64, dir: bool, mode: u32, mtime: SystemTime) -> FileStat {
    FileStat {
        file_type: if dir { FileType::Dir } else { FileType::File },
        size,
        mtime,
        mode,
        uid: 1,
        gid: 2,
    }
}

impl Storage for Mem {
    fn stat(&self, path: &Path) -> Result<FileStat, StorageError> {
        Self::check(path);
        let t = self.tree();
        let mtime = t
            .mtimes
            .get(path)
            .copied()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if let Some(f) = t.files.get(path) {
            return Ok(file_stat(f.len() as u64, false, 0o100644, mtime));
        }
        if path.as_os_str().is_empty() {
            return Ok(file_stat(0, true, 0o40755, mtime));
        }
        match t.dirs.get(path) {
            Some(mode) => Ok(file_stat(0, true, *mode, mtime)),
            None => Err(StorageError::io(path.display(), enoent())),
        }
    }
    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>, StorageError> {
        Self::check(dir);
        let t = self.tree();
        Ok(t.files
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, f)| DirEntry {
                name: p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                stat: file_stat(f.len() as u64, false, 0o100644, SystemTime::UNIX_EPOCH),
            })
            .collect())
    }
    fn open_read(&self, path: &Path, offset: u64) -> Result<Box<dyn ReadHandle>, StorageError> {
        Self::check(path);
        let data = self
            .tree()
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| StorageError::io(path.display(), enoent()))?;
        let mut c = Cursor::new(data);
        c.set_position(offset);
        Ok(Box::new(MemReader(c)))
    }
    fn open_write(
        &self,
        path: &Path,
        mode: WriteMode,
        hints: &LayoutHints,
    ) -> Result<Box<dyn WriteHandle>, StorageError> {
        Self::check(path);
        let mut t = self.tree();
        t.last_hints = Some(hints.clone());
        let old = t.files.get(path).cloned().unwrap_or_default();
        let buf = match mode {
            WriteMode::Truncate => Vec::new(),
            WriteMode::Append => old,
            WriteMode::At(n) => old[..(n as usize).min(old.len())].to_vec(),
        };
        Ok(Box::new(MemWriter {
            mem: self.clone(),
            path: path.to_path_buf(),
            buf,
        }))
    }
    fn mkdir(&self, path: &Path) -> Result<(), StorageError> {
        let mut t = self.tree();
        if t.dirs.contains_key(path) {
            return Err(StorageError::io(
                path.display(),
                io::Error::from_raw_os_error(libc::EEXIST),
            ));
        }
        t.dirs.insert(path.to_path_buf(), 0o40755);
        Ok(())
    }
    fn rmdir(&self, path: &Path) -> Result<(), StorageError> {
        self.tree()
            .dirs
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| StorageError::io(path.display(), enoent()))
    }
    fn unlink(&self, path: &Path) -> Result<(), StorageError> {
        self.tree()
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| StorageError::io(path.display(), enoent()))
    }
    fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        let mut t = self.tree();
        let f = t
            .files
            .remove(from)
            .ok_or_else(|| StorageError::io(from.display(), enoent()))?;
        t.files.insert(to.to_path_buf(), f);
        Ok(())
    }
    fn set_mtime(&self, path: &Path, mtime: SystemTime) -> Result<(), StorageError> {
        self.tree().mtimes.insert(path.to_path_buf(), mtime);
        Ok(())
    }
    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), StorageError> {
        match self.tree().dirs.get_mut(path) {
            Some(m) => {
                *m = 0o40000 | mode;
                Ok(())
            }
            None => Err(StorageError::new(ErrorKind::InvalidInput, "only dirs")),
        }
    }
}

/// The trees made by `construct`, by greeting (tests run in parallel).
static SHARED: Mutex<BTreeMap<String, Arc<Mutex<Tree>>>> = Mutex::new(BTreeMap::new());

fn construct(settings: &dyn Fn(&str) -> Option<String>) -> Result<Box<dyn StorageBackend>, String> {
    let greeting = settings("MEM_GREETING").ok_or("MEM_GREETING is not set")?;
    if greeting == "panic" {
        panic!("constructor panics");
    }
    let tree = Arc::new(Mutex::new(Tree::default()));
    tree.lock()
        .map_err(|_| "poisoned")?
        .files
        .insert(PathBuf::from("greeting"), greeting.clone().into_bytes());
    SHARED
        .lock()
        .map_err(|_| "poisoned")?
        .insert(greeting, tree.clone());
    Ok(Box::new(Mem { tree }))
}

static DESCRIPTOR: StorageDescriptor = StorageDescriptor {
    name: "mem",
    version: "9.8.7",
    description: "in-memory test tree",
    constructor: construct,
};
static PLUGIN: StoragePluginV1 = StoragePluginV1::new(&DESCRIPTOR);
static HEADER: PluginHeader = PluginHeader::storage(&PLUGIN);

fn plugin() -> DynamicStoragePlugin {
    // SAFETY: HEADER is a static of this test binary.
    unsafe { DynamicStoragePlugin::from_header(&HEADER) }.expect("header accepted")
}

fn identity() -> Identity {
    Identity {
        user: "alice".into(),
        uid: 1000,
        gid: 100,
        groups: vec![100, 200, 300],
        home: "/home/alice".into(),
    }
}

fn session(backend: &dyn StorageBackend) -> Box<dyn Storage> {
    let id = identity();
    backend
        .open_session(&StorageSpec {
            base: Path::new("/data/base"),
            confined: true,
            identity: &id,
        })
        .expect("session")
}

fn greeting(s: &str) -> impl Fn(&str) -> Option<String> + '_ {
    move |n: &str| (n == "MEM_GREETING").then(|| s.to_string())
}

#[test]
fn every_operation_crosses_the_boundary() {
    let p = plugin();
    assert_eq!(
        (p.name(), p.version(), p.description()),
        ("mem", "9.8.7", "in-memory test tree")
    );
    let backend = p.construct(&greeting("hello, world")).expect("backend");
    assert_eq!(backend.name(), "mem");
    let s = session(backend.as_ref());
    let tree = SHARED
        .lock()
        .expect("lock")
        .get("hello, world")
        .cloned()
        .expect("constructed");
    assert_eq!(
        tree.lock().expect("lock").last_spec,
        Some((
            PathBuf::from("/data/base"),
            true,
            "alice".to_string(),
            vec![100, 200, 300]
        ))
    );

    // read with offset; the settings value arrived
    let mut text = String::new();
    s.open_read(Path::new("greeting"), 7)
        .expect("open")
        .read_to_string(&mut text)
        .expect("read");
    assert_eq!(text, "world");
    assert_eq!(
        s.open_read(Path::new("greeting"), 0)
            .expect("open")
            .raw_fd(),
        None
    );

    // write, finish, hints
    let hints = LayoutHints {
        expected_size: Some(11),
        streams: 3,
    };
    let mut w = s
        .open_write(Path::new("d/f"), WriteMode::Truncate, &hints)
        .expect("open_write");
    assert_eq!(w.raw_fd(), Some(77));
    w.write_all(b"0123456789").expect("write");
    w.flush().expect("flush");
    w.finish().expect("finish");
    let mut w = s
        .open_write(Path::new("d/f"), WriteMode::At(2), &LayoutHints::default())
        .expect("open_write");
    w.write_all(b"ab").expect("write");
    w.finish().expect("finish");
    let mut w = s
        .open_write(Path::new("d/f"), WriteMode::Append, &LayoutHints::default())
        .expect("open_write");
    w.write_all(b"Z").expect("write");
    w.finish().expect("finish");
    {
        let t = tree.lock().expect("lock");
        assert_eq!(
            t.files.get(Path::new("d/f")).map(Vec::as_slice),
            Some(&b"01abZ"[..])
        );
        assert_eq!(t.last_hints, Some(LayoutHints::default()));
        assert_eq!(t.finished.len(), 3);
    }

    // a writer dropped without finish is freed, not finished
    drop(
        s.open_write(Path::new("d/g"), WriteMode::Truncate, &hints)
            .expect("open_write"),
    );
    assert_eq!(tree.lock().expect("lock").finished.len(), 3);
    assert_eq!(tree.lock().expect("lock").last_hints, Some(hints));

    // stat and list
    let st = s.stat(Path::new("d/f")).expect("stat");
    assert_eq!(
        (st.size, st.file_type, st.uid, st.gid),
        (5, FileType::File, 1, 2)
    );
    assert!(s.stat(Path::new("")).expect("stat base").is_dir());
    let names: Vec<String> = s
        .list(Path::new("d"))
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["f".to_string()]);

    // directories, modes, times (before the epoch too), rename, unlink
    s.mkdir(Path::new("sub")).expect("mkdir");
    let e = s.mkdir(Path::new("sub")).expect_err("exists");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    s.set_mode(Path::new("sub"), 0o700).expect("chmod");
    assert_eq!(s.stat(Path::new("sub")).expect("stat").mode, 0o40700);
    for t in [
        SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
        SystemTime::UNIX_EPOCH - Duration::new(10, 250_000_000),
        SystemTime::UNIX_EPOCH - Duration::from_secs(3),
    ] {
        s.set_mtime(Path::new("sub"), t).expect("mtime");
        assert_eq!(s.stat(Path::new("sub")).expect("stat").mtime, t);
    }
    s.rmdir(Path::new("sub")).expect("rmdir");
    s.rename(Path::new("d/f"), Path::new("d/h"))
        .expect("rename");
    s.unlink(Path::new("d/h")).expect("unlink");
    assert!(s.list(Path::new("d")).expect("list").is_empty());
}

#[test]
fn errors_keep_kind_message_and_os_error() {
    let backend = plugin().construct(&greeting("x")).expect("backend");
    let s = session(backend.as_ref());
    let e = s.unlink(Path::new("missing")).expect_err("missing");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.ftp_code(), 550);
    assert_eq!(e.to_string(), "missing: No such file or directory");
    let os = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error);
    assert_eq!(os, Some(libc::ENOENT));
    let e = s
        .set_mode(Path::new("nodir"), 0o700)
        .expect_err("not a dir");
    assert_eq!(
        (e.kind(), e.to_string().as_str()),
        (ErrorKind::InvalidInput, "only dirs")
    );

    // an I/O error of a handle arrives as the same OS error
    let mut w = s
        .open_write(Path::new("f"), WriteMode::Truncate, &LayoutHints::default())
        .expect("open");
    let e = w.write(b"fail").expect_err("ENOSPC");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
}

#[test]
fn constructor_errors_and_panics_become_messages() {
    let p = plugin();
    let e = p.construct(&|_| None).err().expect("no setting");
    assert_eq!(e, "MEM_GREETING is not set");
    let e = p.construct(&greeting("panic")).err().expect("panics");
    assert_eq!(
        e,
        "storage plugin panicked in new_backend: constructor panics"
    );
}

#[test]
fn a_panic_fails_one_operation_only() {
    let backend = plugin().construct(&greeting("x")).expect("backend");
    let s = session(backend.as_ref());
    let e = s.stat(Path::new("boom")).expect_err("panic is an error");
    assert_eq!(e.kind(), ErrorKind::Other);
    assert_eq!(
        e.to_string(),
        "storage plugin panicked in stat: boom requested"
    );
    assert!(s.open_read(Path::new("boom"), 0).is_err());
    assert!(s.list(Path::new("boom")).is_err());
    // the session is still usable
    assert_eq!(s.stat(Path::new("greeting")).expect("stat").size, 1);
}

fn check(h: &PluginHeader) -> Result<DynamicStoragePlugin, HeaderError> {
    // SAFETY: h is a live header in this process, never freed while the
    // result is used (the tests only look at errors, or at HEADER).
    unsafe { DynamicStoragePlugin::from_header(h) }
}

fn leak(h: PluginHeader) -> &'static PluginHeader {
    Box::leak(Box::new(h))
}

#[test]
fn header_checks_refuse_mismatches_in_order() {
    assert_eq!(
        // SAFETY: a null pointer is allowed.
        unsafe { DynamicStoragePlugin::from_header(ptr::null()) }.err(),
        Some(HeaderError::Null)
    );
    let good = || PluginHeader::storage(&PLUGIN);
    let cases: Vec<(PluginHeader, &str)> = vec![
        (
            PluginHeader {
                magic: *b"NOTUFTPD",
                abi_major: 99,
                ..good()
            },
            "not a uftpd plugin",
        ),
        (
            PluginHeader { role: 7, ..good() },
            "plugin has role 7, not storage",
        ),
        (
            PluginHeader {
                abi_major: 2,
                fingerprint: 1,
                ..good()
            },
            "plugin API version 2.0 does not fit this uftpd's plugin API 1.0",
        ),
        (
            PluginHeader {
                abi_minor: ABI_MINOR + 1,
                ..good()
            },
            "plugin API version 1.1",
        ),
        (
            PluginHeader {
                header_size: 12,
                ..good()
            },
            "plugin header has 12 bytes",
        ),
    ];
    for (h, msg) in cases {
        let e = check(leak(h)).expect_err(msg).to_string();
        assert!(e.starts_with(msg), "{e}");
    }
    let other = "rustc 1.0.0 (a28077b28 2015-05-13)";
    let h = leak(PluginHeader {
        fingerprint: fingerprint(other, API_CRATE_VERSION),
        rustc_version: padded::<RUSTC_VERSION_LEN>(other),
        ..good()
    });
    let e = check(h).expect_err("other rustc").to_string();
    assert!(e.contains(other), "{e}");
    assert!(e.contains(RUSTC_VERSION), "{e}");
    assert!(
        e.contains("rebuild the plugin with the same toolchain"),
        "{e}"
    );
    let h = leak(PluginHeader {
        fingerprint: fingerprint(RUSTC_VERSION, "0.0.1"),
        api_version: padded::<API_VERSION_LEN>("0.0.1"),
        ..good()
    });
    let e = check(h).expect_err("other api").to_string();
    assert!(e.contains("storage-api 0.0.1"), "{e}");
    assert!(e.starts_with("plugin was built with"), "{e}");
}

#[test]
fn fingerprint_and_padding() {
    assert_ne!(fingerprint("a", "b"), fingerprint("ab", ""));
    assert_eq!(FINGERPRINT, fingerprint(RUSTC_VERSION, API_CRATE_VERSION));
    assert!(RUSTC_VERSION.starts_with("rustc "), "{RUSTC_VERSION}");
    let p = padded::<4>("abcdef");
    assert_eq!(p, *b"abc\0");
    assert_eq!(unpadded(&p), "abc");
}

#[test]
fn long_error_messages_are_cut_at_a_char_boundary() {
    let mut e = FfiError::default();
    let msg = "é".repeat(ERROR_MESSAGE_LEN);
    e.set(ErrorKind::Other, 0, &msg);
    assert!(e.len as usize <= ERROR_MESSAGE_LEN);
    assert!(e.text().chars().all(|c| c == 'é'));
}

mod exported {
    // The macro itself, as a plugin crate uses it.
    use crate::StorageDescriptor;
    crate::export_storage_plugin!(StorageDescriptor {
        name: "macro-made",
        version: "1.2.3",
        description: "exported by the macro",
        constructor: super::construct,
    });

    #[test]
    fn macro_exports_a_checked_header() {
        // SAFETY: the header is a static of this test binary.
        let p = unsafe { crate::ffi::DynamicStoragePlugin::from_header(uftpd_plugin_header()) }
            .expect("accepted");
        assert_eq!((p.name(), p.version()), ("macro-made", "1.2.3"));
        assert!(p.construct(&super::greeting("hi")).is_ok());
    }
}

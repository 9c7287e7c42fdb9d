//! Optional PAM session per FTP session (OPEN_USER_SESSIONS).
//!
//! libpam is loaded at run time with `dlopen`, so uftpd needs no PAM
//! headers to build and sites without PAM lose nothing. The session
//! process, still root, opens the PAM session and forks: the child drops
//! privileges and serves the FTP session, the parent waits for it and
//! closes the PAM session as root, as sshd does.

use std::ffi::{CString, c_char, c_int, c_void};
use std::ptr;

use libloading::{Library, Symbol};

const PAM_SUCCESS: c_int = 0;
const PAM_CONV_ERR: c_int = 19;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    c_int,
    *mut *const PamMessage,
    *mut *mut PamResponse,
    *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: ConvFn,
    appdata_ptr: *mut c_void,
}

type StartFn =
    unsafe extern "C" fn(*const c_char, *const c_char, *const PamConv, *mut *mut c_void) -> c_int;
type SessionFn = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type EndFn = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type StrerrorFn = unsafe extern "C" fn(*mut c_void, c_int) -> *const c_char;

/// The conversation function: uftpd cannot answer prompts, so any prompt
/// fails the conversation; informational messages are accepted.
///
/// # Safety
/// Called by libpam with `num_msg` valid message pointers and a valid
/// `resp` out-pointer, as the PAM API guarantees.
unsafe extern "C" fn conversation(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    _appdata: *mut c_void,
) -> c_int {
    if num_msg <= 0 || msg.is_null() || resp.is_null() {
        return PAM_CONV_ERR;
    }
    for i in 0..num_msg as usize {
        // SAFETY: libpam passes an array of num_msg message pointers (Linux-PAM
        // layout: msg[i] points to the i-th message).
        let m = unsafe { *msg.add(i) };
        if m.is_null() {
            return PAM_CONV_ERR;
        }
        // SAFETY: m is a valid pam_message supplied by libpam.
        let style = unsafe { (*m).msg_style };
        if style == PAM_PROMPT_ECHO_OFF || style == PAM_PROMPT_ECHO_ON {
            return PAM_CONV_ERR;
        }
    }
    // SAFETY: libpam frees the response array with free(), so it must come
    // from calloc; zeroed entries mean "no response text".
    let r = unsafe { libc::calloc(num_msg as usize, std::mem::size_of::<PamResponse>()) };
    if r.is_null() {
        return PAM_CONV_ERR;
    }
    // SAFETY: resp is a valid out-pointer provided by libpam.
    unsafe { *resp = r.cast() };
    PAM_SUCCESS
}

/// An open PAM session.
pub struct PamSession {
    lib: Library,
    handle: *mut c_void,
    // Must outlive the handle: libpam keeps a pointer to it.
    _conv: Box<PamConv>,
}

impl std::fmt::Debug for PamSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PamSession")
    }
}

fn strerror(lib: &Library, handle: *mut c_void, code: c_int) -> String {
    // SAFETY: pam_strerror has this signature in every libpam; it returns a
    // pointer to a static or handle-owned NUL-terminated string.
    unsafe {
        match lib.get::<StrerrorFn>(b"pam_strerror\0") {
            Ok(f) => {
                let p = f(handle, code);
                if p.is_null() {
                    format!("PAM error {code}")
                } else {
                    std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            }
            Err(_) => format!("PAM error {code}"),
        }
    }
}

impl PamSession {
    /// pam_start + pam_open_session for `user` with service `service`.
    pub fn open(service: &str, user: &str) -> Result<PamSession, String> {
        // SAFETY: loading libpam runs its initialisers, which are sound to
        // run in this single-threaded process.
        let lib = unsafe { Library::new("libpam.so.0") }
            .map_err(|e| format!("cannot load libpam.so.0: {e}"))?;
        let service_c = CString::new(service).map_err(|e| e.to_string())?;
        let user_c = CString::new(user).map_err(|e| e.to_string())?;
        let conv = Box::new(PamConv {
            conv: conversation,
            appdata_ptr: ptr::null_mut(),
        });
        let mut handle: *mut c_void = ptr::null_mut();
        // SAFETY: the symbols have the documented Linux-PAM signatures; the
        // strings and the conversation struct outlive the calls (conv is
        // kept in the returned PamSession for the handle's lifetime).
        unsafe {
            let start: Symbol<StartFn> = lib
                .get(b"pam_start\0")
                .map_err(|e| format!("pam_start: {e}"))?;
            let rc = start(service_c.as_ptr(), user_c.as_ptr(), &*conv, &mut handle);
            if rc != PAM_SUCCESS || handle.is_null() {
                return Err(format!("pam_start: {}", strerror(&lib, handle, rc)));
            }
            let open: Symbol<SessionFn> = lib
                .get(b"pam_open_session\0")
                .map_err(|e| format!("pam_open_session: {e}"))?;
            let rc = open(handle, 0);
            if rc != PAM_SUCCESS {
                let msg = strerror(&lib, handle, rc);
                if let Ok(end) = lib.get::<EndFn>(b"pam_end\0") {
                    end(handle, rc);
                }
                return Err(format!("pam_open_session: {msg}"));
            }
        }
        Ok(PamSession {
            lib,
            handle,
            _conv: conv,
        })
    }

    /// pam_close_session + pam_end.
    pub fn close(self) -> Result<(), String> {
        // SAFETY: handle came from a successful pam_start and is used once
        // more here, then ended; the symbols have the documented signatures.
        unsafe {
            let close: Symbol<SessionFn> = self
                .lib
                .get(b"pam_close_session\0")
                .map_err(|e| format!("pam_close_session: {e}"))?;
            let rc = close(self.handle, 0);
            let msg = (rc != PAM_SUCCESS).then(|| strerror(&self.lib, self.handle, rc));
            if let Ok(end) = self.lib.get::<EndFn>(b"pam_end\0") {
                end(self.handle, rc);
            }
            match msg {
                Some(m) => Err(format!("pam_close_session: {m}")),
                None => Ok(()),
            }
        }
    }
}

//! Listing formats (PROTOCOL section 5, "Listing formats"); times in local
//! time.
//!
//! Every line builder here passes the name through [`name`], so that a
//! file name with CR or LF (possible on disk, never through FTP commands)
//! cannot split a listing line on the data channel or a reply line on the
//! control channel.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Local};
use storage_api::{Access, FileStat, Identity};

/// A file name as it goes into a listing line: CR and LF escaped as `\r`
/// and `\n` ([`super::control::escape_line_breaks`]), everything else as
/// it is. NLST lines are just this.
pub fn name(raw: &str) -> Cow<'_, str> {
    super::control::escape_line_breaks(raw)
}

fn local(t: SystemTime) -> DateTime<Local> {
    DateTime::<Local>::from(t)
}

/// `YYYYMMDDHHMMSS` in local time.
pub fn mdtm(t: SystemTime) -> String {
    local(t).format("%Y%m%d%H%M%S").to_string()
}

fn flag(b: bool, c: char, empty: &str) -> String {
    if b { c.to_string() } else { empty.to_string() }
}

/// `r`/`w`/`x` as the session user may use the entry, with `empty` for a
/// missing permission.
fn rwx(st: &FileStat, id: &Identity, empty: &str) -> String {
    let mut s = flag(id.may(st, Access::Read), 'r', empty);
    s.push_str(&flag(id.may(st, Access::Write), 'w', empty));
    s.push_str(&flag(id.may(st, Access::Execute), 'x', empty));
    s
}

/// MLST/MLSD line: `size=..;modify=..;type=file|dir;perm=..;UNIX.mode=..; name`.
pub fn mlst_line(file: &str, st: &FileStat, id: &Identity) -> String {
    let dir = st.is_dir();
    let mut perm = String::new();
    if id.may(st, Access::Read) {
        perm.push(if dir { 'l' } else { 'r' });
    }
    if id.may(st, Access::Write) {
        perm.push('w');
    }
    if id.may(st, Access::Execute) {
        perm.push(if dir { 'e' } else { 'x' });
    }
    format!(
        "size={};modify={};type={};perm={};UNIX.mode={:o}; {}",
        st.size,
        mdtm(st.mtime),
        if dir { "dir" } else { "file" },
        perm,
        st.mode,
        name(file)
    )
}

/// STAT line: `<d|-><r|-><w|-><x|-> <size> <mtime ms> <name>`.
pub fn simple_line(file: &str, st: &FileStat, id: &Identity) -> String {
    let ms = st
        .mtime
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() * 1000)
        .unwrap_or(0);
    format!(
        "{}{} {} {} {}",
        if st.is_dir() { 'd' } else { '-' },
        rwx(st, id, "-"),
        st.size,
        ms,
        name(file)
    )
}

/// LIST line in `ls -l` style.
pub fn ls_line(file: &str, st: &FileStat, id: &Identity, now: SystemTime) -> String {
    let half_year = std::time::Duration::from_secs(15_811_200);
    let recent = now
        .checked_sub(half_year)
        .map(|t| st.mtime >= t)
        .unwrap_or(true);
    let date = if recent {
        local(st.mtime).format("%b %d %H:%M")
    } else {
        local(st.mtime).format("%b %d %Y")
    };
    format!(
        "{}{}------   {} dummy dummy {} {} {}",
        if st.is_dir() { 'd' } else { '-' },
        rwx(st, id, "-"),
        if st.is_dir() { 3 } else { 1 },
        st.size,
        date,
        name(file)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_api::FileType;

    fn id() -> Identity {
        Identity {
            user: "u".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
            home: "/home/u".into(),
        }
    }

    fn st(ft: FileType, mode: u32) -> FileStat {
        FileStat {
            file_type: ft,
            size: 42,
            mtime: UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            mode,
            uid: 1000,
            gid: 1000,
        }
    }

    #[test]
    fn formats() {
        let f = st(FileType::File, 0o100640);
        let line = mlst_line("a.txt", &f, &id());
        assert!(line.starts_with("size=42;modify="), "{line}");
        assert!(
            line.ends_with(";type=file;perm=rw;UNIX.mode=100640; a.txt"),
            "{line}"
        );
        let d = st(FileType::Dir, 0o40755);
        assert!(mlst_line("d", &d, &id()).contains(";type=dir;perm=lwe;UNIX.mode=40755; d"));
        assert_eq!(
            simple_line("a.txt", &f, &id()),
            "-rw- 42 1700000000000 a.txt"
        );
        assert_eq!(simple_line("d", &d, &id()), "drwx 42 1700000000000 d");
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let ls = ls_line("a.txt", &f, &id(), now);
        assert!(ls.starts_with("-rw-------   1 dummy dummy 42 Nov "), "{ls}");
        assert!(ls.ends_with(" 2023 a.txt"), "{ls}");
    }

    #[test]
    fn names_with_line_breaks_stay_on_one_line() {
        let f = st(FileType::File, 0o100640);
        let evil = "evil\r\n211 End of file list\r\n";
        let shown = "evil\\r\\n211 End of file list\\r\\n";
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        for line in [
            mlst_line(evil, &f, &id()),
            simple_line(evil, &f, &id()),
            ls_line(evil, &f, &id(), now),
        ] {
            assert!(!line.contains(['\r', '\n']), "{line:?}");
            assert!(line.ends_with(&format!(" {shown}")), "{line:?}");
        }
        assert_eq!(name("cr\rin"), "cr\\rin");
        assert_eq!(name("back\\slash"), "back\\slash", "backslashes unchanged");
    }
}

//! The FTP control connection of a session: bounded line reading and
//! replies written in one `write` each (TCP_NODELAY is on, so a multi-line
//! reply must not go out as many small segments).
//!
//! Every reply line passes [`escape_line_breaks`] on its way out, so that a
//! file name or client argument quoted in a reply can never end the line
//! (or a multi-line reply) early.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::TcpStream;

/// Longest command line accepted; longer lines are answered with an error
/// and skipped.
pub const MAX_LINE: usize = 8192;

/// Makes `text` safe to put inside one line of a reply or a listing: each
/// CR becomes the two characters `\r` and each LF the two characters `\n`
/// (a backslash and a letter, as in C). Nothing else changes, backslashes
/// included, so a name without CR and LF is sent exactly as it is; a name
/// that has them is shown readably but can no longer be addressed (paths
/// with CR, LF or NUL are refused in commands anyway, see
/// [`check_argument`]).
///
/// This is the one escape for names and paths on both channels: the
/// control channel applies it to every reply line ([`Control::reply`],
/// [`Control::reply_lines`]) and the listing lines of LIST, NLST, MLSD,
/// MLST and STAT apply it to the name (see [`super::listing`]).
pub fn escape_line_breaks(text: &str) -> Cow<'_, str> {
    if !text.contains(['\r', '\n']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Why a command argument is refused before the command runs.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentError {
    /// A CR, LF or NUL inside the argument (a bare CR inside the line; LF
    /// ends the line, so it only reaches here through other means).
    #[error("Argument syntax error: CR, LF or NUL character in argument")]
    LineBreakOrNul,
}

/// Refuses an argument that contains CR, LF or NUL: no file name with a
/// line break can be created or addressed through FTP, and no such
/// character can be quoted back in a reply or passed on to another server.
pub fn check_argument(arg: &str) -> Result<(), ArgumentError> {
    if arg.contains(['\r', '\n', '\0']) {
        return Err(ArgumentError::LineBreakOrNul);
    }
    Ok(())
}

/// One line read from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A command line without its line end.
    Text(String),
    /// The line was longer than [`MAX_LINE`] (and has been skipped).
    TooLong,
    /// The line was not valid UTF-8.
    NotUtf8,
}

/// Buffered reader/writer for the control connection.
#[derive(Debug)]
pub struct Control {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Control {
    /// Wraps the control socket; `pending` holds bytes the daemon already
    /// read past the login.
    pub fn new(stream: TcpStream, pending: &[u8]) -> Self {
        let mut buf = vec![0u8; MAX_LINE * 2];
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        Control {
            stream,
            buf,
            start: 0,
            end: n,
        }
    }

    /// The socket (for addresses and options).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Whether a whole line is buffered already (read_line will not wait).
    pub fn has_line(&self) -> bool {
        self.buf[self.start..self.end].contains(&b'\n')
    }

    /// Reads the next line; `None` at end of stream.
    pub fn read_line(&mut self) -> io::Result<Option<Line>> {
        let mut skipping = false;
        loop {
            if let Some(pos) = self.buf[self.start..self.end]
                .iter()
                .position(|b| *b == b'\n')
            {
                let line_end = self.start + pos;
                let raw = &self.buf[self.start..line_end];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let result = if skipping {
                    Line::TooLong
                } else {
                    match std::str::from_utf8(raw) {
                        Ok(s) => Line::Text(s.to_string()),
                        Err(_) => Line::NotUtf8,
                    }
                };
                self.start = line_end + 1;
                return Ok(Some(result));
            }
            // No newline in the buffered bytes.
            if self.end - self.start >= MAX_LINE {
                skipping = true;
                self.start = 0;
                self.end = 0;
            } else if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                if self.end > self.start && !skipping {
                    // A last line without line end.
                    let raw = &self.buf[self.start..self.end];
                    let result = match std::str::from_utf8(raw) {
                        Ok(s) => Line::Text(s.to_string()),
                        Err(_) => Line::NotUtf8,
                    };
                    self.start = self.end;
                    return Ok(Some(result));
                }
                return Ok(None);
            }
            self.end += n;
        }
    }

    /// Writes one reply line (`\r\n` appended; CR and LF inside the line
    /// escaped with [`escape_line_breaks`]).
    pub fn reply(&mut self, line: &str) -> io::Result<()> {
        let line = escape_line_breaks(line);
        let mut out = String::with_capacity(line.len() + 2);
        out.push_str(&line);
        out.push_str("\r\n");
        self.stream.write_all(out.as_bytes())
    }

    /// Writes several reply lines in one go (each as [`Control::reply`]
    /// writes one).
    pub fn reply_lines<S: AsRef<str>>(&mut self, lines: &[S]) -> io::Result<()> {
        let mut out = String::new();
        for l in lines {
            out.push_str(&escape_line_breaks(l.as_ref()));
            out.push_str("\r\n");
        }
        self.stream.write_all(out.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        (a, b)
    }

    #[test]
    fn lines_limits_and_utf8() {
        let (mut client, server) = pair();
        let mut c = Control::new(server, b"PWD\r\nNO");
        assert_eq!(c.read_line().expect("r"), Some(Line::Text("PWD".into())));
        client.write_all(b"OP\r\n").expect("w");
        assert_eq!(c.read_line().expect("r"), Some(Line::Text("NOOP".into())));
        let long = vec![b'x'; MAX_LINE * 3];
        client.write_all(&long).expect("w");
        client.write_all(b"\r\nSYST\n\xff\xfe\r\nlast").expect("w");
        drop(client);
        assert_eq!(c.read_line().expect("r"), Some(Line::TooLong));
        assert_eq!(c.read_line().expect("r"), Some(Line::Text("SYST".into())));
        assert_eq!(c.read_line().expect("r"), Some(Line::NotUtf8));
        assert_eq!(c.read_line().expect("r"), Some(Line::Text("last".into())));
        assert_eq!(c.read_line().expect("r"), None);
    }

    #[test]
    fn line_breaks_escaped() {
        assert!(matches!(escape_line_breaks("plain name"), Cow::Borrowed(_)));
        assert_eq!(escape_line_breaks("a\\nb c:\\r"), "a\\nb c:\\r");
        assert_eq!(
            escape_line_breaks("evil\r\n211 End of file list\r\n"),
            "evil\\r\\n211 End of file list\\r\\n"
        );
        assert_eq!(escape_line_breaks("\n\n\r"), "\\n\\n\\r");
        assert_eq!(escape_line_breaks("ünï\rcode"), "ünï\\rcode");
        let out = escape_line_breaks("x\r\ny\tz\0");
        assert!(!out.contains(['\r', '\n']), "{out}");
        assert_eq!(out, "x\\r\\ny\tz\0", "only CR and LF change");
    }

    #[test]
    fn arguments_with_line_breaks_or_nul_refused() {
        assert_eq!(check_argument("dir/file name.txt"), Ok(()));
        assert_eq!(check_argument(""), Ok(()));
        for bad in ["nl/cr\rin", "a\nb", "nul\0x", "\r"] {
            assert_eq!(
                check_argument(bad),
                Err(ArgumentError::LineBreakOrNul),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn replies_cannot_inject_lines() {
        let (mut client, server) = pair();
        let mut c = Control::new(server, b"");
        c.reply("550 Error processing command 'X': no\r\n211 End")
            .expect("w");
        c.reply_lines(&[
            "211- Sending file list",
            " -rw- 1 0 a\nb\rc",
            "211 End of file list",
        ])
        .expect("w");
        drop(c);
        let mut got = String::new();
        client.read_to_string(&mut got).expect("r");
        assert_eq!(
            got,
            "550 Error processing command 'X': no\\r\\n211 End\r\n\
             211- Sending file list\r\n -rw- 1 0 a\\nb\\rc\r\n211 End of file list\r\n"
        );
    }
}

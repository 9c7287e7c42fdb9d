//! The FTP control connection of a session: bounded line reading and
//! replies written in one `write` each (TCP_NODELAY is on, so a multi-line
//! reply must not go out as many small segments).

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// Longest command line accepted; longer lines are answered with an error
/// and skipped.
pub const MAX_LINE: usize = 8192;

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

    /// Writes one reply line (`\r\n` appended).
    pub fn reply(&mut self, line: &str) -> io::Result<()> {
        let mut out = String::with_capacity(line.len() + 2);
        out.push_str(line);
        out.push_str("\r\n");
        self.stream.write_all(out.as_bytes())
    }

    /// Writes several reply lines in one go.
    pub fn reply_lines<S: AsRef<str>>(&mut self, lines: &[S]) -> io::Result<()> {
        let mut out = String::new();
        for l in lines {
            out.push_str(l.as_ref());
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
}

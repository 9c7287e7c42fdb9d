//! gzip stream codec for uftpd (work in progress).

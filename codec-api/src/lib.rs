//! Stream codec traits for uftpd data channels (compression, encryption).
//!
//! Work in progress: the traits land with the data-channel codecs issue.

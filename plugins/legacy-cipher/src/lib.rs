//! BLOWFISH-ECB and AES-CBC stream codecs for uftpd (work in progress).

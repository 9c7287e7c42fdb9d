"""Helpers for the uftpd end-to-end tests.

- daemon:  start/stop a uftpd (or the reference Python UFTPD) with a config
- cmdport: speak the command-port protocol (PROTOCOL.md section 3)
- ftp:     a raw FTP control client that sees replies byte for byte
- users:   test users, files and directories owned by them
"""

//! Client paths: lexical normalisation, the base-directory check, and the
//! includes/excludes/UFTP_NOWRITE patterns.
//!
//! This is the first line of defence only: the storage backend resolves the
//! resulting relative path beneath an open handle of the base directory, so
//! symlinks cannot lead out either.

use std::path::{Path, PathBuf};

use glob::{MatchOptions, Pattern};

/// Normalises `arg` against the absolute directory `cwd`: joins relative
/// paths, removes `.` and `..` (never above `/`) and duplicate slashes.
pub fn normalize(cwd: &str, arg: &str) -> String {
    let joined = if arg.starts_with('/') {
        arg.to_string()
    } else {
        format!("{cwd}/{arg}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for comp in joined.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = String::with_capacity(joined.len());
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Whether the normalised absolute path `abs` is `base` or below it.
pub fn within(base: &str, abs: &str) -> bool {
    if base == "/" {
        return true;
    }
    abs == base
        || (abs.len() > base.len() && abs.starts_with(base) && abs.as_bytes()[base.len()] == b'/')
}

/// The path `rel` (below `base`, which resolves to `base_real`) really
/// names on the local file system, symbolic links resolved, written under
/// the logical `base` (links in `base`'s own path are not expanded, so
/// patterns written for the base keep matching). A last component that does not exist yet is taken as
/// it is. `None` when the path cannot be resolved (no such parent, no
/// permission, not a local file system) or leaves the base (the storage
/// refuses those anyway).
pub fn real_within(base: &str, base_real: &Path, rel: &Path) -> Option<String> {
    let full = Path::new(base).join(rel);
    let real = match std::fs::canonicalize(&full) {
        Ok(p) => p,
        Err(_) => {
            let parent = std::fs::canonicalize(full.parent()?).ok()?;
            parent.join(full.file_name()?)
        }
    };
    let inside = real.strip_prefix(base_real).ok()?;
    let inside = inside.to_str()?;
    Some(match (base.trim_end_matches('/'), inside) {
        ("", "") => "/".to_string(),
        (b, "") => b.to_string(),
        (b, i) => format!("{b}/{i}"),
    })
}

/// The path of `abs` relative to `base` (empty for the base itself).
/// Callers check [`within`] first.
pub fn relative(base: &str, abs: &str) -> PathBuf {
    let rest = if base == "/" {
        abs
    } else {
        abs.get(base.len()..).unwrap_or("")
    };
    PathBuf::from(rest.trim_start_matches('/'))
}

/// The last component of an absolute path (`/` for the root).
pub fn basename(abs: &str) -> &str {
    if abs == "/" {
        return "/";
    }
    abs.rsplit('/').next().unwrap_or(abs)
}

/// A set of fnmatch-style patterns on absolute paths (`*` also matches `/`,
/// as Python's fnmatch does).
#[derive(Debug, Default, Clone)]
pub struct PatternSet {
    patterns: Vec<(String, Pattern)>,
}

const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

impl PatternSet {
    /// Builds the set; relative patterns are taken relative to `dir`.
    /// Patterns that do not parse are matched literally.
    pub fn new<S: AsRef<str>>(patterns: &[S], dir: &str) -> Self {
        let patterns = patterns
            .iter()
            .map(|p| {
                let p = p.as_ref().trim();
                let abs = if p.starts_with('/') {
                    p.to_string()
                } else if dir.ends_with('/') {
                    format!("{dir}{p}")
                } else {
                    format!("{dir}/{p}")
                };
                let pat = Pattern::new(&abs)
                    .unwrap_or_else(|_| Pattern::new(&Pattern::escape(&abs)).unwrap_or_default());
                (abs, pat)
            })
            .collect();
        PatternSet { patterns }
    }

    /// True when no patterns are set.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The first pattern matching `abs`, if any.
    pub fn matching(&self, abs: &str) -> Option<&str> {
        self.patterns
            .iter()
            .find(|(_, p)| p.matches_with(abs, MATCH))
            .map(|(s, _)| s.as_str())
    }

    /// The first pattern that may match some path strictly below the
    /// directory `dir`, if any: renaming such a directory would move the
    /// paths it protects to names it does not match (or, as the target,
    /// move other paths under it).
    pub fn matching_below(&self, dir: &str) -> Option<&str> {
        let prefix = if dir.ends_with('/') {
            dir.to_string()
        } else {
            format!("{dir}/")
        };
        self.patterns
            .iter()
            .find(|(s, _)| may_match_with_prefix(s, &prefix))
            .map(|(s, _)| s.as_str())
    }
}

/// Whether the fnmatch-style `pattern` (`*` crossing `/`, `?`, `[...]`
/// and `[!...]`; a `[` without its `]` is literal) matches some string
/// that starts with `prefix`.
fn may_match_with_prefix(pattern: &str, prefix: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = prefix.chars().collect();
    // reach[j]: the pattern read so far can have matched exactly t[..j];
    // with t wholly matched, the rest of the pattern matches something.
    let mut reach = vec![false; t.len() + 1];
    reach[0] = true;
    let mut i = 0;
    while i < p.len() {
        if reach[t.len()] {
            return true;
        }
        let mut next = vec![false; t.len() + 1];
        let step = match p[i] {
            '*' => {
                // any run of characters, the empty one included
                let mut any = false;
                for j in 0..=t.len() {
                    any |= reach[j];
                    next[j] = any;
                }
                1
            }
            '[' => match class_end(&p, i) {
                Some(end) => {
                    for j in 0..t.len() {
                        if reach[j] && class_matches(&p[i + 1..end], t[j]) {
                            next[j + 1] = true;
                        }
                    }
                    end + 1 - i
                }
                None => {
                    literal_step(&reach, &mut next, &t, '[');
                    1
                }
            },
            '?' => {
                next[1..].copy_from_slice(&reach[..t.len()]);
                1
            }
            c => {
                literal_step(&reach, &mut next, &t, c);
                1
            }
        };
        reach = next;
        i += step;
    }
    reach[t.len()]
}

fn literal_step(reach: &[bool], next: &mut [bool], t: &[char], c: char) {
    for j in 0..t.len() {
        if reach[j] && t[j] == c {
            next[j + 1] = true;
        }
    }
}

/// Index of the `]` closing the class opened at `p[open]` (a `]` right
/// after `[` or `[!` belongs to the class).
fn class_end(p: &[char], open: usize) -> Option<usize> {
    let mut k = open + 1;
    if p.get(k) == Some(&'!') {
        k += 1;
    }
    if p.get(k) == Some(&']') {
        k += 1;
    }
    (k..p.len()).find(|&e| p[e] == ']')
}

/// Whether `c` is in the class body `body` (between the brackets).
fn class_matches(body: &[char], c: char) -> bool {
    let (negated, body) = match body.split_first() {
        Some(('!', rest)) => (true, rest),
        _ => (false, body),
    };
    let mut hit = false;
    let mut k = 0;
    while k < body.len() {
        if k + 2 < body.len() && body[k + 1] == '-' {
            hit |= body[k] <= c && c <= body[k + 2];
            k += 3;
        } else {
            hit |= body[k] == c;
            k += 1;
        }
    }
    hit != negated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(normalize("/base", "a/b"), "/base/a/b");
        assert_eq!(normalize("/base", "../etc/passwd"), "/etc/passwd");
        assert_eq!(normalize("/base", "../../../../x"), "/x");
        assert_eq!(normalize("/base/sub", "./../x/./y//z/"), "/base/x/y/z");
        assert_eq!(normalize("/base", "/abs/../path"), "/path");
        assert_eq!(normalize("/base", ""), "/base");
        assert_eq!(normalize("/", ".."), "/");
        assert_eq!(normalize("/base", "//double"), "/double");
    }

    #[test]
    fn base_check() {
        assert!(within("/base", "/base"));
        assert!(within("/base", "/base/x"));
        assert!(!within("/base", "/basement"));
        assert!(!within("/base", "/"));
        assert!(within("/", "/anything"));
        assert_eq!(relative("/base", "/base"), PathBuf::from(""));
        assert_eq!(relative("/base", "/base/a/b"), PathBuf::from("a/b"));
        assert_eq!(relative("/", "/a/b"), PathBuf::from("a/b"));
        assert_eq!(basename("/a/b"), "b");
        assert_eq!(basename("/"), "/");
    }

    #[test]
    fn patterns() {
        let s = PatternSet::new(&["*.secret", "/etc/*", "data/keep"], "/base");
        assert_eq!(s.matching("/base/x.secret"), Some("/base/*.secret"));
        assert_eq!(
            s.matching("/base/deep/dir/x.secret"),
            Some("/base/*.secret"),
            "star crosses /"
        );
        assert!(s.matching("/etc/passwd").is_some());
        assert!(s.matching("/base/data/keep").is_some());
        assert!(s.matching("/base/data/other").is_none());
        let home = PatternSet::new(&[".ssh/authorized_keys"], "/home/u");
        assert!(home.matching("/home/u/.ssh/authorized_keys").is_some());
    }

    #[test]
    fn patterns_below_a_directory() {
        let home = PatternSet::new(&[".ssh/authorized_keys"], "/home/u");
        assert!(home.matching_below("/home/u/.ssh").is_some());
        assert!(home.matching_below("/home/u").is_some());
        assert!(home.matching_below("/").is_some());
        assert!(home.matching_below("/home/u/.sshx").is_none());
        assert!(
            home.matching_below("/home/u/.ssh/authorized_keys")
                .is_none()
        );
        assert!(home.matching_below("/home/u/data").is_none());
        let ex = PatternSet::new(&["priv/*"], "/base");
        assert!(ex.matching_below("/base/priv").is_some());
        assert!(ex.matching_below("/base/pub").is_none());
        assert!(ex.matching_below("/base/pri").is_none());
        // `*` crosses `/`: any directory may hold a match
        let star = PatternSet::new(&["*.secret"], "/base");
        assert!(star.matching_below("/base/any/dir").is_some());
        assert!(star.matching_below("/other").is_none());
        let q = PatternSet::new(&["d?/x", "[a-c]z/y", "[!a]w/v"], "/b");
        assert!(q.matching_below("/b/d1").is_some());
        assert!(q.matching_below("/b/d12").is_none());
        assert!(q.matching_below("/b/bz").is_some());
        assert!(q.matching_below("/b/ez").is_none());
        assert!(q.matching_below("/b/bw").is_some());
        assert!(q.matching_below("/b/aw").is_none());
        // a pattern that is not a valid glob is literal
        let lit = PatternSet::new(&["odd[/x"], "/b");
        assert!(lit.matching_below("/b/odd[").is_some());
    }
}

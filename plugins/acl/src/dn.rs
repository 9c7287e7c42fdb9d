//! Distinguished names: the RFC 2253 string form used in ACL files, the
//! subject of an X.509 certificate, and the match between the two.
//!
//! A DN is a list of RDNs (relative distinguished names); an RDN is a set of
//! one or more attribute type/value pairs (AVAs), written `CN=Auth` or, when
//! multi-valued, `CN=Auth+UID=auth`. In the string form the most specific
//! RDN comes first (`CN=Auth,O=UNICORE,C=EU`), the reverse of the order in
//! the certificate.
//!
//! Matching ([`Dn::matches`]): an ACL entry matches a subject when every RDN
//! of the entry is contained in some RDN of the subject (all of the entry
//! RDN's AVAs appear in that one subject RDN). Attribute types are compared
//! by OID (`CN`, `commonName` and `2.5.4.3` are the same), values
//! case-insensitively; the order of the RDNs does not matter. So the entry
//! `CN=Auth,O=UNICORE` matches the subject `CN=Auth,OU=Servers,O=UNICORE,C=EU`,
//! and `O=UNICORE` alone matches every certificate with that organisation.

use std::fmt;

/// Why a DN string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    /// Nothing but separators and blanks.
    #[error("empty DN")]
    Empty,
    /// An AVA without `=`.
    #[error("expected '=' after attribute type '{0}'")]
    MissingEquals(String),
    /// `=` with no type before it.
    #[error("missing attribute type before '=' at position {0}")]
    MissingType(usize),
    /// A type name that is neither known nor a dotted OID.
    #[error("unknown attribute type '{0}'{1}")]
    UnknownType(String, &'static str),
    /// `\` followed by something that is neither special nor two hex digits.
    #[error("invalid escape sequence at position {0}")]
    BadEscape(usize),
    /// `\xx` escapes that do not form UTF-8.
    #[error("escaped bytes in the value of '{0}' are not valid UTF-8")]
    NotUtf8(String),
    /// A `#` value that is not a hex-encoded BER element.
    #[error("invalid #hex value for '{0}': {1}")]
    BadHex(String, &'static str),
    /// A `"` value without its closing quote, or text after it.
    #[error("badly quoted value for '{0}'")]
    BadQuote(String),
}

/// An attribute value, as far as matching needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A character string (whatever its ASN.1 string type).
    Text(String),
    /// Anything else: the BER tag number and content octets.
    Binary {
        /// Tag (first identifier octet).
        tag: u8,
        /// Content octets.
        content: Vec<u8>,
    },
}

/// One attribute type and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ava {
    /// The attribute type as a dotted OID (`2.5.4.3` for CN).
    pub oid: String,
    /// The value.
    pub value: Value,
}

/// A relative distinguished name: one or more AVAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rdn(pub Vec<Ava>);

/// A distinguished name, RDNs in string order (most specific first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dn(pub Vec<Rdn>);

/// Attribute type names: (OID, canonical short name, other names).
const TYPES: &[(&str, &str, &[&str])] = &[
    ("2.5.4.3", "CN", &["commonName"]),
    ("2.5.4.6", "C", &["countryName"]),
    ("2.5.4.7", "L", &["localityName"]),
    ("2.5.4.8", "ST", &["stateOrProvinceName", "S"]),
    ("2.5.4.9", "STREET", &["streetAddress"]),
    ("2.5.4.10", "O", &["organizationName"]),
    ("2.5.4.11", "OU", &["organizationalUnitName"]),
    ("2.5.4.4", "SN", &["surname"]),
    ("2.5.4.5", "serialNumber", &[]),
    ("2.5.4.12", "title", &["T"]),
    ("2.5.4.15", "businessCategory", &[]),
    ("2.5.4.17", "postalCode", &[]),
    ("2.5.4.41", "name", &[]),
    ("2.5.4.42", "GN", &["givenName", "G"]),
    ("2.5.4.43", "initials", &[]),
    ("2.5.4.44", "generationQualifier", &[]),
    ("2.5.4.46", "dnQualifier", &[]),
    ("2.5.4.65", "pseudonym", &[]),
    ("2.5.4.97", "organizationIdentifier", &[]),
    ("0.9.2342.19200300.100.1.25", "DC", &["domainComponent"]),
    ("0.9.2342.19200300.100.1.1", "UID", &["userId"]),
    ("1.2.840.113549.1.9.1", "emailAddress", &["E", "email"]),
];

/// The OID of an attribute type name (`CN`, `commonName`, `OID.2.5.4.3`,
/// `2.5.4.3`), case-insensitively.
pub fn type_oid(name: &str) -> Option<String> {
    for (oid, short, others) in TYPES {
        if short.eq_ignore_ascii_case(name) || others.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            return Some((*oid).to_string());
        }
    }
    let dotted = name
        .strip_prefix("OID.")
        .or_else(|| name.strip_prefix("oid."))
        .unwrap_or(name);
    let arcs: Vec<&str> = dotted.split('.').collect();
    if arcs.len() >= 2
        && arcs
            .iter()
            .all(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(dotted.to_string());
    }
    None
}

/// The short name of an OID for display, if it has one.
pub fn type_name(oid: &str) -> Option<&'static str> {
    TYPES.iter().find(|(o, _, _)| *o == oid).map(|(_, s, _)| *s)
}

/// Decodes the content of a BER/DER attribute value with the given tag.
pub fn decode_value(tag: u8, content: &[u8]) -> Value {
    let text = match tag {
        // UTF8String, NumericString, PrintableString, IA5String, VisibleString
        12 | 18 | 19 | 22 | 26 => std::str::from_utf8(content).ok().map(str::to_string),
        // TeletexString: in practice Latin-1
        20 => Some(content.iter().map(|b| char::from(*b)).collect()),
        // BMPString: UTF-16BE
        30 if content.len().is_multiple_of(2) => {
            let units: Vec<u16> = content
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        // UniversalString: UTF-32BE
        28 if content.len().is_multiple_of(4) => content
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    };
    match text {
        Some(t) => Value::Text(t),
        None => Value::Binary {
            tag,
            content: content.to_vec(),
        },
    }
}

/// Splits one BER element (single-octet tag, definite length) into tag
/// and content; the element must fill `bytes` exactly.
pub fn split_tlv(bytes: &[u8]) -> Result<(u8, &[u8]), &'static str> {
    let (&tag, rest) = bytes.split_first().ok_or("empty")?;
    if tag & 0x1f == 0x1f {
        return Err("multi-octet tags are not supported");
    }
    let (&first, rest) = rest.split_first().ok_or("no length")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("bad length");
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() != len {
        return Err("length does not match the data");
    }
    Ok((tag, rest))
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

impl Ava {
    /// Same type, and the same value ignoring case (binary values: equal).
    pub fn matches(&self, other: &Ava) -> bool {
        self.oid == other.oid
            && match (&self.value, &other.value) {
                (Value::Text(a), Value::Text(b)) => a == b || lower(a) == lower(b),
                (a, b) => a == b,
            }
    }
}

impl Dn {
    /// Parses the RFC 2253 string form. Also accepted, as RFC 2253 asks
    /// of readers: `;` between RDNs, blanks around `,`, `+` and `=`,
    /// `"quoted"` values (RFC 1779), `OID.` prefixes; empty RDNs (a
    /// doubled or trailing comma) are ignored, as UFTPD 3.x did.
    pub fn parse(s: &str) -> Result<Dn, DnError> {
        Parser {
            chars: s.char_indices().collect(),
            pos: 0,
        }
        .dn()
    }

    /// The value of the first attribute with this OID (in string order).
    pub fn find(&self, oid: &str) -> Option<&Value> {
        self.0
            .iter()
            .flat_map(|r| r.0.iter())
            .find(|a| a.oid == oid)
            .map(|a| &a.value)
    }

    /// `CN=...` of this name for log lines, or the whole name without a CN.
    pub fn common_name(&self) -> String {
        match self.find("2.5.4.3") {
            Some(Value::Text(t)) => format!("CN={}", escape(t)),
            _ => self.to_string(),
        }
    }

    /// True when this DN, taken as an ACL entry, matches `subject`: every
    /// RDN of the entry is contained in one RDN of the subject.
    pub fn matches(&self, subject: &Dn) -> bool {
        !self.0.is_empty()
            && self.0.iter().all(|entry_rdn| {
                subject.0.iter().any(|subject_rdn| {
                    entry_rdn
                        .0
                        .iter()
                        .all(|want| subject_rdn.0.iter().any(|have| want.matches(have)))
                })
            })
    }
}

/// Escapes a value for the RFC 2253 string form.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i + 1 == n => out.push_str("\\ "),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\{:02X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for Ava {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match type_name(&self.oid) {
            Some(name) => f.write_str(name)?,
            None => f.write_str(&self.oid)?,
        }
        f.write_str("=")?;
        match &self.value {
            Value::Text(t) => f.write_str(&escape(t)),
            Value::Binary { tag, content } => {
                write!(f, "#{tag:02X}")?;
                if content.len() < 0x80 {
                    write!(f, "{:02X}", content.len())?;
                } else {
                    let len = content.len().to_be_bytes();
                    let skip = len.iter().take_while(|b| **b == 0).count();
                    write!(f, "{:02X}", 0x80 | (len.len() - skip))?;
                    for b in &len[skip..] {
                        write!(f, "{b:02X}")?;
                    }
                }
                for b in content {
                    write!(f, "{b:02X}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Dn {
    /// The RFC 2253 form, as `openssl x509 -subject -nameopt RFC2253` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, ava) in rdn.0.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                write!(f, "{ava}")?;
            }
        }
        Ok(())
    }
}

struct Parser {
    chars: Vec<(usize, char)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|(_, c)| *c)
    }

    fn offset(&self) -> usize {
        self.chars
            .get(self.pos)
            .map(|(i, _)| *i)
            .unwrap_or_else(|| {
                self.chars
                    .last()
                    .map(|(i, c)| i + c.len_utf8())
                    .unwrap_or(0)
            })
    }

    fn skip_blanks(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn dn(mut self) -> Result<Dn, DnError> {
        let mut rdns = Vec::new();
        let mut current: Vec<Ava> = Vec::new();
        loop {
            self.skip_blanks();
            match self.peek() {
                None => break,
                Some(',' | ';') => {
                    // empty RDN: ignored
                    self.pos += 1;
                    if !current.is_empty() {
                        rdns.push(Rdn(std::mem::take(&mut current)));
                    }
                    continue;
                }
                Some(_) => {}
            }
            current.push(self.ava()?);
            self.skip_blanks();
            match self.peek() {
                None => break,
                Some('+') => self.pos += 1,
                Some(',' | ';') => {
                    self.pos += 1;
                    rdns.push(Rdn(std::mem::take(&mut current)));
                }
                // ava() stops only at a separator or the end
                Some(_) => return Err(DnError::MissingEquals(String::new())),
            }
        }
        if !current.is_empty() {
            rdns.push(Rdn(current));
        }
        if rdns.is_empty() {
            return Err(DnError::Empty);
        }
        Ok(Dn(rdns))
    }

    fn ava(&mut self) -> Result<Ava, DnError> {
        let start = self.offset();
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c == '=' || c == ',' || c == ';' || c == '+' {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        let name = name.trim().to_string();
        if self.peek() != Some('=') {
            if name.is_empty() {
                return Err(DnError::MissingType(start));
            }
            return Err(DnError::MissingEquals(name));
        }
        if name.is_empty() {
            return Err(DnError::MissingType(start));
        }
        self.pos += 1;
        let oid = type_oid(&name).ok_or_else(|| DnError::UnknownType(name.clone(), hint(&name)))?;
        self.skip_blanks();
        let value = match self.peek() {
            Some('#') => self.hex_value(&name)?,
            Some('"') => self.quoted_value(&name)?,
            _ => Value::Text(self.string_value(&name)?),
        };
        Ok(Ava { oid, value })
    }

    fn hex_value(&mut self, name: &str) -> Result<Value, DnError> {
        self.pos += 1;
        let mut hex = String::new();
        while let Some(c) = self.peek() {
            if c == ',' || c == ';' || c == '+' || c.is_ascii_whitespace() {
                break;
            }
            hex.push(c);
            self.pos += 1;
        }
        if hex.is_empty() || !hex.len().is_multiple_of(2) {
            return Err(DnError::BadHex(
                name.to_string(),
                "need an even number of hex digits",
            ));
        }
        let mut bytes = Vec::with_capacity(hex.len() / 2);
        for pair in hex.as_bytes().chunks(2) {
            let s =
                std::str::from_utf8(pair).map_err(|_| DnError::BadHex(name.into(), "not hex"))?;
            bytes.push(
                u8::from_str_radix(s, 16).map_err(|_| DnError::BadHex(name.into(), "not hex"))?,
            );
        }
        let (tag, content) = split_tlv(&bytes).map_err(|e| DnError::BadHex(name.into(), e))?;
        self.skip_blanks();
        if !matches!(self.peek(), None | Some(',' | ';' | '+')) {
            return Err(DnError::BadHex(name.into(), "text after the hex value"));
        }
        Ok(decode_value(tag, content))
    }

    fn quoted_value(&mut self, name: &str) -> Result<Value, DnError> {
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            match self.peek() {
                None => return Err(DnError::BadQuote(name.to_string())),
                Some('"') => {
                    self.pos += 1;
                    break;
                }
                Some('\\') => self.escape(&mut bytes)?,
                Some(c) => {
                    push_char(&mut bytes, c);
                    self.pos += 1;
                }
            }
        }
        self.skip_blanks();
        if !matches!(self.peek(), None | Some(',' | ';' | '+')) {
            return Err(DnError::BadQuote(name.to_string()));
        }
        String::from_utf8(bytes)
            .map(Value::Text)
            .map_err(|_| DnError::NotUtf8(name.to_string()))
    }

    fn string_value(&mut self, name: &str) -> Result<String, DnError> {
        let mut bytes = Vec::new();
        // length of `bytes` up to the last character that must be kept
        // (anything but an unescaped trailing blank)
        let mut keep = 0;
        while let Some(c) = self.peek() {
            match c {
                ',' | ';' | '+' => break,
                '\\' => {
                    self.escape(&mut bytes)?;
                    keep = bytes.len();
                }
                c => {
                    push_char(&mut bytes, c);
                    self.pos += 1;
                    if !c.is_ascii_whitespace() {
                        keep = bytes.len();
                    }
                }
            }
        }
        bytes.truncate(keep);
        String::from_utf8(bytes).map_err(|_| DnError::NotUtf8(name.to_string()))
    }

    /// At a `\`: appends the escaped character or byte.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), DnError> {
        let at = self.offset();
        self.pos += 1;
        let Some(c) = self.peek() else {
            return Err(DnError::BadEscape(at));
        };
        if c.is_ascii_hexdigit() {
            let d = self.chars.get(self.pos + 1).map(|(_, c)| *c);
            if let Some(d) = d.filter(char::is_ascii_hexdigit) {
                let hi = c.to_digit(16).unwrap_or(0);
                let lo = d.to_digit(16).unwrap_or(0);
                out.push(u8::try_from(hi * 16 + lo).map_err(|_| DnError::BadEscape(at))?);
                self.pos += 2;
                return Ok(());
            }
            return Err(DnError::BadEscape(at));
        }
        if matches!(
            c,
            ',' | '=' | '+' | '<' | '>' | '#' | ';' | '\\' | '"' | ' '
        ) {
            push_char(out, c);
            self.pos += 1;
            return Ok(());
        }
        Err(DnError::BadEscape(at))
    }
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// A hint for type names that show a common copy-and-paste mistake.
fn hint(name: &str) -> &'static str {
    if name.starts_with('/') {
        " (this looks like the OpenSSL '/C=../O=../CN=..' form: print the name with `openssl x509 -noout -subject -nameopt RFC2253` and copy the part after 'subject=')"
    } else if name.eq_ignore_ascii_case("subject") || name.eq_ignore_ascii_case("issuer") {
        " (copy only the part after 'subject=')"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(s: &str) -> Dn {
        match Dn::parse(s) {
            Ok(d) => d,
            Err(e) => panic!("parse {s:?}: {e}"),
        }
    }

    fn text(oid: &str, v: &str) -> Ava {
        Ava {
            oid: oid.into(),
            value: Value::Text(v.into()),
        }
    }

    #[test]
    fn simple_dn() {
        let d = dn("CN=Auth,O=UNICORE,C=EU");
        assert_eq!(
            d,
            Dn(vec![
                Rdn(vec![text("2.5.4.3", "Auth")]),
                Rdn(vec![text("2.5.4.10", "UNICORE")]),
                Rdn(vec![text("2.5.4.6", "EU")]),
            ])
        );
        assert_eq!(d.to_string(), "CN=Auth,O=UNICORE,C=EU");
        assert_eq!(d.common_name(), "CN=Auth");
    }

    #[test]
    fn blanks_semicolons_long_names_and_oids() {
        let a = dn(" commonName = Auth ; o=UNICORE ,  OID.2.5.4.6=EU ");
        assert_eq!(a, dn("CN=Auth,O=UNICORE,C=EU"));
        assert_eq!(dn("2.5.4.3=x"), dn("cn=x"));
        // types are case-insensitive, values keep their case
        assert_eq!(dn("cN=Auth").0[0].0[0], text("2.5.4.3", "Auth"));
        assert_eq!(
            dn("emailAddress=a@b.c,DC=org,UID=x,ST=Bavaria"),
            dn("E=a@b.c,domainComponent=org,userId=x,S=Bavaria")
        );
    }

    #[test]
    fn escapes() {
        let d = dn(r"CN=Doe\, John,O=A\+B,OU=\#1,L=\4A\C3\A9na,ST=say \22hi\22,street=back\\slash");
        assert_eq!(d.0[0].0[0].value, Value::Text("Doe, John".into()));
        assert_eq!(d.0[1].0[0].value, Value::Text("A+B".into()));
        assert_eq!(d.0[2].0[0].value, Value::Text("#1".into()));
        assert_eq!(d.0[3].0[0].value, Value::Text("Jéna".into()));
        assert_eq!(d.0[4].0[0].value, Value::Text("say \"hi\"".into()));
        assert_eq!(d.0[5].0[0].value, Value::Text("back\\slash".into()));
        // escaped blanks survive, unescaped trailing ones do not
        let d = dn(r"CN=\ x\ ,O=y  ");
        assert_eq!(d.0[0].0[0].value, Value::Text(" x ".into()));
        assert_eq!(d.0[1].0[0].value, Value::Text("y".into()));
        // round trip through the string form
        for s in [
            r"CN=Doe\, John,O=A\+B",
            r"CN=\#1,OU=\ lead",
            r"CN=a\;b\<c\>d=e",
        ] {
            assert_eq!(dn(&dn(s).to_string()), dn(s), "{s}");
        }
    }

    #[test]
    fn quoted_values() {
        assert_eq!(
            dn(r#"CN="Doe, John+x",O=y"#).0[0].0[0].value,
            Value::Text("Doe, John+x".into())
        );
        assert!(matches!(
            Dn::parse(r#"CN="open"#),
            Err(DnError::BadQuote(_))
        ));
        assert!(matches!(Dn::parse(r#"CN="a"b"#), Err(DnError::BadQuote(_))));
    }

    #[test]
    fn multi_valued_rdns() {
        let d = dn("CN=Auth+UID=auth,O=UNICORE");
        assert_eq!(d.0.len(), 2);
        assert_eq!(
            d.0[0],
            Rdn(vec![
                text("2.5.4.3", "Auth"),
                text("0.9.2342.19200300.100.1.1", "auth")
            ])
        );
        assert_eq!(d.to_string(), "CN=Auth+UID=auth,O=UNICORE");
    }

    #[test]
    fn hex_values() {
        // #0C04... = UTF8String "Auth"; #13 = PrintableString
        assert_eq!(dn("CN=#0C0441757468"), dn("CN=Auth"));
        assert_eq!(dn("CN=#130441757468"), dn("CN=Auth"));
        // BMPString "Jo"
        assert_eq!(dn("CN=#1E04004A006F"), dn("CN=Jo"));
        // not a string type: kept as binary, printed back as hex
        let d = dn("1.2.3.4=#040201FF");
        assert_eq!(
            d.0[0].0[0].value,
            Value::Binary {
                tag: 4,
                content: vec![1, 0xff]
            }
        );
        assert_eq!(d.to_string(), "1.2.3.4=#040201FF");
        for bad in ["CN=#0C05417574", "CN=#0", "CN=#zz", "CN=#"] {
            assert!(matches!(Dn::parse(bad), Err(DnError::BadHex(..))), "{bad}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(Dn::parse(""), Err(DnError::Empty));
        assert_eq!(Dn::parse(" , ;"), Err(DnError::Empty));
        assert!(matches!(Dn::parse("CN"), Err(DnError::MissingEquals(_))));
        assert!(matches!(
            Dn::parse("CN=a,O"),
            Err(DnError::MissingEquals(_))
        ));
        assert!(matches!(Dn::parse("=a"), Err(DnError::MissingType(_))));
        assert!(matches!(Dn::parse("XY=a"), Err(DnError::UnknownType(..))));
        assert!(matches!(Dn::parse(r"CN=a\q"), Err(DnError::BadEscape(_))));
        assert!(matches!(Dn::parse(r"CN=a\"), Err(DnError::BadEscape(_))));
        assert!(matches!(Dn::parse(r"CN=a\4"), Err(DnError::BadEscape(_))));
        assert!(matches!(Dn::parse(r"CN=\C3"), Err(DnError::NotUtf8(_))));
        // the OpenSSL one-line form and pasted prefixes get a hint
        let e = Dn::parse("/C=EU/O=UNICORE/CN=Auth")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("RFC2253")));
        let e = Dn::parse("subject=CN=Auth").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("after 'subject='")));
    }

    #[test]
    fn empty_rdns_are_ignored_like_3x() {
        assert_eq!(dn("CN=a,,O=b,"), dn("CN=a,O=b"));
    }

    #[test]
    fn matching() {
        let subject = dn("CN=Auth Server+UID=auth,OU=Servers,O=UNICORE,C=EU");
        assert!(dn("CN=Auth Server,O=UNICORE,C=EU").matches(&subject));
        // case-insensitive values and types, any order
        assert!(dn("c=eu,cn=AUTH SERVER").matches(&subject));
        // a subset of a multi-valued RDN matches
        assert!(dn("UID=auth").matches(&subject));
        assert!(dn("UID=auth+CN=auth server").matches(&subject));
        // all entry RDNs must be present
        assert!(!dn("CN=Auth Server,O=Other").matches(&subject));
        assert!(!dn("CN=Auth").matches(&subject));
        // a multi-valued entry RDN must be inside ONE subject RDN
        assert!(!dn("CN=Auth Server+OU=Servers").matches(&subject));
        // repeated types: any instance
        let s2 = dn("CN=x,OU=a,OU=b,O=o");
        assert!(dn("OU=b,CN=x").matches(&s2));
        // escaped specials compare as the characters they stand for
        let s3 = dn(r"CN=Doe\, John,O=A\+B=C");
        assert!(!dn(r"CN=Doe\, John").matches(&dn("CN=Doe")));
        assert!(dn(r#"CN="doe, john""#).matches(&s3));
        // Unicode case folding
        assert!(dn("CN=ÄRGER").matches(&dn("CN=ärger")));
        // binary values compare exactly
        assert!(dn("1.2.3.4=#040201FF").matches(&dn("1.2.3.4=#040201FF,CN=x")));
        assert!(!dn("1.2.3.4=#040201FE").matches(&dn("1.2.3.4=#040201FF")));
        // the empty DN matches nothing
        assert!(!Dn::default().matches(&subject));
    }

    proptest::proptest! {
        /// The parser never panics or loops, whatever an ACL line holds.
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = Dn::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_dn_like_text(s in "[A-Za-z0-9 =,;+#\"\\\\]{0,60}") {
            let _ = Dn::parse(&s);
        }

        /// Printing and parsing again gives the same DN, and a DN always
        /// matches itself.
        #[test]
        fn display_round_trips(
            values in proptest::collection::vec("\\PC{0,12}", 1..5),
            multi in proptest::bool::ANY,
        ) {
            let types = ["2.5.4.3", "2.5.4.10", "2.5.4.11", "0.9.2342.19200300.100.1.25"];
            let mut rdns: Vec<Rdn> = values
                .iter()
                .enumerate()
                .map(|(i, v)| Rdn(vec![Ava {
                    oid: types[i % types.len()].to_string(),
                    value: Value::Text(v.clone()),
                }]))
                .collect();
            if multi && rdns.len() > 1 {
                let second = rdns.remove(1);
                rdns[0].0.extend(second.0);
            }
            let d = Dn(rdns);
            let text = d.to_string();
            let back = Dn::parse(&text);
            proptest::prop_assert_eq!(back.as_ref(), Ok(&d), "{}", text);
            proptest::prop_assert!(d.matches(&d));
        }
    }

    #[test]
    fn tlv() {
        assert_eq!(split_tlv(&[0x0c, 1, b'a']), Ok((0x0c, &b"a"[..])));
        let long: Vec<u8> = [0x04, 0x81, 0x80].into_iter().chain([7u8; 128]).collect();
        assert_eq!(split_tlv(&long).map(|(t, c)| (t, c.len())), Ok((4, 128)));
        assert!(split_tlv(&[0x1f, 1, 1]).is_err());
        assert!(split_tlv(&[0x04, 0x80]).is_err());
        assert!(split_tlv(&[0x04, 2, 1]).is_err());
        assert!(split_tlv(&[]).is_err());
    }
}

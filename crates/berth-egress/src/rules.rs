//! Egress rules: parsing, display and matching. No I/O.
//!
//! Syntax (one rule): `ACTION HOST[:PORT] [METHOD] [/PATH-PREFIX]`
//! - `ACTION` is `allow` or `deny`;
//! - `HOST` is an exact name (`github.com`), `*.suffix` (matches `a.suffix`, `a.b.suffix`,
//!   never `suffix` itself), `*` (any name), an IP literal (`10.0.0.5`, `[::1]`) or a CIDR
//!   block (`10.0.0.0/8`, `[fd00::/8]`, with a port: `10.0.0.0/8:443`, `[fd00::/8]:443`); IP
//!   literal targets only ever match a rule that names that exact IP or a CIDR containing it.
//!   Every numeric spelling of an IPv4 address (`167772161`, `0x0a000001`, `10.1`,
//!   `012.0.0.1`, with or without a trailing dot) is an IP literal, normalized the way
//!   `inet_aton(3)` reads it, so a `*` rule never lets one through as a "name";
//! - `METHOD` is an HTTP method (compared case-insensitively);
//! - `/PATH-PREFIX` is compared against the request path (without the query) after the
//!   normalization done by [`canonical_path`].
//!
//! A [`Policy`] is an ordered list of rules: the first rule that matches decides, and an
//! attempt that no rule matches is denied. A policy assembled from several lists (a
//! workspace's own rules, then its templates') may label each rule with where it comes from;
//! the label shows in decisions' reasons and in [`Policy::rule_label`].

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// What a rule does with the attempts it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

/// Which hosts a rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this (normalized) host name or IP literal (canonical text, no brackets).
    Exact(String),
    /// `*.suffix`: any name ending in `.suffix` (the field holds `suffix`, without the dot).
    Suffix(String),
    /// `*`: any host name (never an IP literal).
    Any,
    /// `ADDR/PREFIX`: any IP literal in the block (never a name).
    Cidr(Cidr),
}

/// An IP block: the network address (host bits zero) and the prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` (brackets already removed); refuses host bits set.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = s.split_once('/')?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
            return None;
        }
        let prefix: u8 = prefix.parse().ok()?;
        let addr: IpAddr = normalize_host(addr)?.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return None;
        }
        (masked(addr, prefix) == addr).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` lies in the block (an IPv4 block never contains an IPv6 address, mapped
    /// or not, and the other way round).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                masked(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}/{}", self.prefix),
            IpAddr::V6(a) => write!(f, "[{a}/{}]", self.prefix),
        }
    }
}

impl HostPattern {
    /// Whether `host` (already normalized with [`normalize_host`]) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(suffix) => {
                !is_ip_literal(host)
                    && host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
            HostPattern::Any => !is_ip_literal(host),
            HostPattern::Cidr(c) => host.parse::<IpAddr>().is_ok_and(|ip| c.contains(ip)),
        }
    }

    /// Whether the pattern names IP addresses (an IP literal or a CIDR block).
    pub fn is_ip(&self) -> bool {
        match self {
            HostPattern::Exact(h) => is_ip_literal(h),
            HostPattern::Cidr(_) => true,
            HostPattern::Suffix(_) | HostPattern::Any => false,
        }
    }

    pub fn is_exact(&self) -> bool {
        matches!(self, HostPattern::Exact(_))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) if h.contains(':') => write!(f, "[{h}]"),
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*.{s}"),
            HostPattern::Any => f.write_str("*"),
            HostPattern::Cidr(c) => c.fmt(f),
        }
    }
}

/// One egress rule. See the module documentation for the syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub host: HostPattern,
    pub port: Option<u16>,
    /// Upper-case HTTP method.
    pub method: Option<String>,
    /// Normalized path prefix, starting with `/`.
    pub path_prefix: Option<String>,
}

/// Why a rule's text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("empty rule")]
    Empty,
    #[error("unknown action {0:?}: expected `allow` or `deny`")]
    Action(String),
    #[error("missing host")]
    MissingHost,
    #[error("invalid host {0:?}")]
    Host(String),
    #[error("invalid port {0:?}")]
    Port(String),
    #[error("invalid method {0:?}")]
    Method(String),
    #[error("invalid path prefix {0:?}: {1}")]
    Path(String, &'static str),
    #[error("unexpected {0:?}: expected `ACTION HOST[:PORT] [METHOD] [/PATH]`")]
    Extra(String),
}

impl Rule {
    /// Parses the CLI syntax, e.g. `allow *.npmjs.org:443` or `deny api.github.com POST /repos`.
    pub fn parse(s: &str) -> Result<Rule, RuleError> {
        let mut tokens = s.split_whitespace();
        let action = match tokens.next() {
            None => return Err(RuleError::Empty),
            Some(a) if a.eq_ignore_ascii_case("allow") => Action::Allow,
            Some(a) if a.eq_ignore_ascii_case("deny") => Action::Deny,
            Some(a) => return Err(RuleError::Action(a.to_string())),
        };
        let target = tokens.next().ok_or(RuleError::MissingHost)?;
        let (host, port) = parse_host_port_pattern(target)?;
        let mut method = None;
        let mut path_prefix = None;
        for tok in tokens {
            if tok.starts_with('/') {
                if path_prefix.is_some() {
                    return Err(RuleError::Extra(tok.to_string()));
                }
                let canon = canonical_path(tok).map_err(|e| RuleError::Path(tok.to_string(), e))?;
                path_prefix = Some(canon);
            } else {
                if method.is_some() || path_prefix.is_some() {
                    return Err(RuleError::Extra(tok.to_string()));
                }
                if !tok.bytes().all(is_tchar) {
                    return Err(RuleError::Method(tok.to_string()));
                }
                method = Some(tok.to_ascii_uppercase());
            }
        }
        Ok(Rule {
            action,
            host,
            port,
            method,
            path_prefix,
        })
    }

    /// Whether the rule matches host and port (ignoring method and path).
    pub fn matches_host_port(&self, host: &str, port: u16) -> bool {
        self.host.matches(host) && self.port.is_none_or(|p| p == port)
    }

    /// Whether the rule constrains method or path (and so needs to see inside requests).
    pub fn is_request_level(&self) -> bool {
        self.method.is_some() || self.path_prefix.is_some()
    }

    /// Whether the rule matches the attempt. A method or path constraint never matches an
    /// attempt that has no method or path (a CONNECT that is not intercepted).
    pub fn matches(&self, a: &Attempt) -> bool {
        if !self.matches_host_port(&a.host, a.port) {
            return false;
        }
        if let Some(m) = &self.method {
            match &a.method {
                Some(am) if am.eq_ignore_ascii_case(m) => {}
                _ => return false,
            }
        }
        if let Some(prefix) = &self.path_prefix {
            match a.path.as_deref().map(canonical_path) {
                Some(Ok(p)) if p.starts_with(prefix.as_str()) => {}
                _ => return false,
            }
        }
        true
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(m) = &self.method {
            write!(f, " {m}")?;
        }
        if let Some(p) = &self.path_prefix {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Rule {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rule::parse(s)
    }
}

/// One attempt to reach something: a CONNECT (no method, no path) or one HTTP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Normalized with [`normalize_host`]: lowercase, no trailing dot, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    pub method: Option<String>,
    /// The request target's path (a query is ignored for matching).
    pub path: Option<String>,
}

/// The outcome of [`Policy::decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    /// Index of the rule that decided; `None` for the default deny (or a built-in refusal).
    pub rule: Option<usize>,
    pub reason: String,
}

/// An ordered rule list: first match wins, no match means deny.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    /// Where each rule comes from (e.g. `template npm`), by index; shorter than `rules` (or
    /// empty) when some rules carry no label. Shared, so cloning a policy stays cheap.
    origins: Vec<Option<Arc<str>>>,
}

/// What to do with a CONNECT, from the rules alone (see [`Policy::connect_plan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectPlan {
    /// The host-level decision is final for every request inside: tunnel or deny on it.
    Decided(Decision),
    /// Some rule that could match depends on method or path: terminate TLS and decide per
    /// request.
    PerRequest,
}

impl Policy {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            origins: Vec::new(),
        }
    }

    /// A policy whose rules carry where they come from (`None`: no label), in order.
    pub fn with_origins(rules: Vec<(Option<Arc<str>>, Rule)>) -> Self {
        let (origins, rules) = rules.into_iter().unzip();
        Self { rules, origins }
    }

    /// Where the rule at `index` comes from, if it was labelled.
    pub fn origin(&self, index: usize) -> Option<&str> {
        self.origins.get(index).and_then(|o| o.as_deref())
    }

    /// The rule at `index` as logs show it: `template npm: allow registry.npmjs.org:443`, or
    /// just the rule when it has no origin label.
    pub fn rule_label(&self, index: Option<usize>) -> Option<String> {
        let i = index?;
        let rule = self.rules.get(i)?;
        Some(match self.origin(i) {
            Some(origin) => format!("{origin}: {rule}"),
            None => rule.to_string(),
        })
    }

    /// Parses one rule per non-empty line (`#` starts a comment line).
    pub fn parse_lines(text: &str) -> Result<Policy, (usize, RuleError)> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            rules.push(Rule::parse(line).map_err(|e| (i + 1, e))?);
        }
        Ok(Policy::new(rules))
    }

    /// Decides one attempt: the first matching rule wins; none matching means deny.
    pub fn decide(&self, a: &Attempt) -> Decision {
        if let Some(path) = &a.path {
            if let Err(why) = canonical_path(path) {
                return Decision {
                    allow: false,
                    rule: None,
                    reason: format!("refused path: {why}"),
                };
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matches(a) {
                return self.decision_for(i);
            }
        }
        Decision {
            allow: false,
            rule: None,
            reason: "no rule allows it (default deny)".to_string(),
        }
    }

    fn decision_for(&self, i: usize) -> Decision {
        let (allow, reason) = match (self.rules.get(i), self.rule_label(Some(i))) {
            (Some(rule), Some(label)) if rule.action == Action::Allow => {
                (true, format!("allowed by rule {} ({label})", i + 1))
            }
            (Some(_), Some(label)) => (false, format!("denied by rule {} ({label})", i + 1)),
            _ => (false, "no rule allows it (default deny)".to_string()),
        };
        Decision {
            allow,
            rule: Some(i),
            reason,
        }
    }

    /// Plans a CONNECT to `host:port` from the rules: walks the rules that match host and
    /// port in order; a request-level rule (method/path) before the first host-level one
    /// means the decision depends on each request ([`ConnectPlan::PerRequest`]) unless no
    /// rule on that walk could allow anything (then it is a deny right away).
    pub fn connect_plan(&self, host: &str, port: u16) -> ConnectPlan {
        let mut request_level = false;
        let mut could_allow = false;
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.matches_host_port(host, port) {
                continue;
            }
            if rule.action == Action::Allow {
                could_allow = true;
            }
            if rule.is_request_level() {
                request_level = true;
                continue;
            }
            if !request_level {
                return ConnectPlan::Decided(self.decision_for(i));
            }
            break;
        }
        if request_level && could_allow {
            return ConnectPlan::PerRequest;
        }
        let reason = if request_level {
            "no rule allows any request to it (default deny)"
        } else {
            "no rule allows it (default deny)"
        };
        ConnectPlan::Decided(Decision {
            allow: false,
            rule: None,
            reason: reason.to_string(),
        })
    }

    /// The rule at `index`, if any.
    pub fn rule(&self, index: Option<usize>) -> Option<&Rule> {
        index.and_then(|i| self.rules.get(i))
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_host_port_pattern(s: &str) -> Result<(HostPattern, Option<u16>), RuleError> {
    let (host, port) = split_host_port(s).ok_or_else(|| RuleError::Host(s.to_string()))?;
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| RuleError::Port(p.to_string()))?,
        ),
    };
    let pattern = if host == "*" {
        HostPattern::Any
    } else if host.contains('/') {
        HostPattern::Cidr(Cidr::parse(host).ok_or_else(|| RuleError::Host(s.to_string()))?)
    } else if let Some(suffix) = host.strip_prefix("*.") {
        let suffix = normalize_host(suffix)
            .filter(|s| !is_ip_literal(s))
            .ok_or_else(|| RuleError::Host(s.to_string()))?;
        HostPattern::Suffix(suffix)
    } else {
        HostPattern::Exact(normalize_host(host).ok_or_else(|| RuleError::Host(s.to_string()))?)
    };
    Ok((pattern, port))
}

/// Splits `host[:port]` / `[v6]:port` / `[v6]`; the host comes back without brackets.
/// Returns `None` on malformed input.
pub fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        if after.is_empty() {
            return Some((host, None));
        }
        let port = after.strip_prefix(':')?;
        return Some((host, Some(port)));
    }
    match s.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => None, // bare IPv6 without brackets
        Some((h, p)) => Some((h, Some(p))),
        None => Some((s, None)),
    }
}

/// Normalizes a host name or IP literal (brackets already removed): lowercase, no
/// trailing dot, IP literals in canonical form. A host whose last label is a number
/// (`167772161`, `0x0a000001`, `10.1`, `012.0.0.1`) is an IPv4 literal in the forms
/// `inet_aton(3)` accepts (what the resolver would have made of it), normalized to
/// dotted-quad, or not a host at all if it is not a valid one. `None` if it is not a
/// plausible host.
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    if ends_in_number(&host) {
        return parse_ipv4_numeric(&host).map(|ip| ip.to_string());
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
    }
    Some(host)
}

/// Whether the last label looks like a number (decimal digits, or `0x` and hex digits): such
/// a host can only be an IPv4 address (as in the WHATWG URL standard's host parser).
fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or("");
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    last.strip_prefix("0x")
        .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses an IPv4 address the way `inet_aton(3)` does: one to four parts, each decimal,
/// octal (leading `0`) or hex (`0x`); the last part fills the remaining bytes.
fn parse_ipv4_numeric(host: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for p in &parts {
        values.push(parse_c_number(p)?);
    }
    let (last, init) = values.split_last()?;
    let mut addr: u32 = 0;
    for (i, v) in init.iter().enumerate() {
        if *v > 255 {
            return None;
        }
        addr |= (*v as u32) << (24 - 8 * i);
    }
    let rest_bits = 32 - 8 * init.len() as u32;
    if rest_bits < 32 && *last >= (1u64 << rest_bits) || *last > u64::from(u32::MAX) {
        return None;
    }
    Some(std::net::Ipv4Addr::from(addr | *last as u32))
}

/// One `inet_aton` part: `0x`-hex, `0`-octal or decimal; `None` if empty, invalid or huge.
fn parse_c_number(s: &str) -> Option<u64> {
    let (digits, radix) = if let Some(hex) = s.strip_prefix("0x") {
        (hex, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() {
        // `0x` alone is zero for inet_aton; an empty part is invalid.
        return (radix == 16).then_some(0);
    }
    if digits.len() > 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Whether a normalized host is an IP literal.
pub fn is_ip_literal(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
}

/// Normalizes a request path for matching: drops the query and fragment, decodes
/// percent-escapes of unreserved characters, upper-cases the other escapes. Refuses
/// (`Err`) paths that do not start with `/`, carry control characters or bad escapes, or
/// contain `.`/`..` segments (also when written with escapes or backslashes), since
/// origins disagree on how to resolve them and they could step outside an allowed prefix.
pub fn canonical_path(raw: &str) -> Result<String, &'static str> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err("path must start with /");
    }
    if !path.is_ascii() {
        return Err("non-ASCII path");
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut decoded_all: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or("bad percent-escape")?;
            let v = hex_val(hex[0])
                .zip(hex_val(hex[1]))
                .map(|(h, l)| h * 16 + l)
                .ok_or("bad percent-escape")?;
            decoded_all.push(v);
            if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                out.push(char::from(v));
            } else {
                out.push('%');
                out.push(char::from(hex[0].to_ascii_uppercase()));
                out.push(char::from(hex[1].to_ascii_uppercase()));
            }
            i += 3;
        } else {
            if b.is_ascii_control() || b == b' ' {
                return Err("control character in path");
            }
            decoded_all.push(b);
            out.push(char::from(b));
            i += 1;
        }
    }
    if decoded_all
        .split(|b| *b == b'/' || *b == b'\\')
        .any(|seg| seg == b"." || seg == b"..")
    {
        return Err("dot segment in path");
    }
    Ok(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(host: &str, port: u16, method: Option<&str>, path: Option<&str>) -> Attempt {
        Attempt {
            host: host.to_string(),
            port,
            method: method.map(str::to_string),
            path: path.map(str::to_string),
        }
    }

    fn policy(lines: &[&str]) -> Policy {
        Policy::new(lines.iter().map(|l| Rule::parse(l).unwrap()).collect())
    }

    #[test]
    fn parse_and_display_round_trip() {
        for (input, shown) in [
            ("allow github.com", "allow github.com"),
            ("allow *.npmjs.org:443", "allow *.npmjs.org:443"),
            (
                "deny api.github.com POST /repos",
                "deny api.github.com POST /repos",
            ),
            (
                "allow example.com:8080 GET /v1/",
                "allow example.com:8080 GET /v1/",
            ),
            ("ALLOW GitHub.COM. get", "allow github.com GET"),
            (
                "allow example.com /v1/%7euser",
                "allow example.com /v1/~user",
            ),
            ("allow *", "allow *"),
            ("deny *:25", "deny *:25"),
            ("allow 10.0.0.5:8443", "allow 10.0.0.5:8443"),
            ("allow [::1]:443", "allow [::1]:443"),
            ("allow [0:0::1]", "allow [::1]"),
            ("allow 167772161", "allow 10.0.0.1"),
            ("allow 10.0.0.0/8", "allow 10.0.0.0/8"),
            ("allow 10.0.0.0/8:443 GET /x", "allow 10.0.0.0/8:443 GET /x"),
            ("deny [fd00::/8]", "deny [fd00::/8]"),
            ("allow [FD00:0::/8]:8443", "allow [fd00::/8]:8443"),
            ("allow 0.0.0.0/0", "allow 0.0.0.0/0"),
            ("allow 192.0.2.7/32", "allow 192.0.2.7/32"),
        ] {
            let rule = Rule::parse(input).unwrap();
            assert_eq!(rule.to_string(), shown, "{input}");
            assert_eq!(Rule::parse(&rule.to_string()).unwrap(), rule, "{input}");
        }
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "permit github.com",
            "allow",
            "allow github.com:0",
            "allow github.com:99999",
            "allow github.com:x",
            "allow git hub.com/x",
            "allow *.",
            "allow *.10.0.0.1",
            "allow ::1",
            "allow gith@b.com",
            "allow github.com GET POST",
            "allow github.com /a /b",
            "allow github.com /a GET",
            "allow github.com G(T",
            "allow github.com /a/../b",
            "allow github.com /%zz",
            "allow 10.0.0.1/8",
            "allow 10.0.0.0/33",
            "allow 10.0.0.0/",
            "allow 10.0.0.0/+8",
            "allow /8",
            "allow fd00::/8",
            "allow [fd00::/129]",
            "allow *.example/8",
            "allow example.com/8",
            "allow 1.2.3.4.5",
            "allow 256.1.1.1",
            "allow 08.1.1.1",
            "allow example.0x1",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn host_patterns() {
        let exact = HostPattern::Exact("github.com".into());
        let suffix = HostPattern::Suffix("npmjs.org".into());
        assert!(exact.matches("github.com"));
        assert!(!exact.matches("api.github.com"));
        assert!(!exact.matches("evilgithub.com"));
        assert!(suffix.matches("registry.npmjs.org"));
        assert!(suffix.matches("a.b.npmjs.org"));
        assert!(!suffix.matches("npmjs.org"));
        assert!(!suffix.matches("evilnpmjs.org"));
        assert!(HostPattern::Any.matches("anything.example"));
        assert!(!HostPattern::Any.matches("127.0.0.1"));
        assert!(!HostPattern::Any.matches("::1"));
    }

    #[test]
    fn decide_table() {
        let p = policy(&[
            "deny api.github.com POST /repos",
            "allow api.github.com",
            "allow github.com:443",
            "allow *.npmjs.org",
            "allow example.com:8080 GET /v1/",
            "allow 10.1.2.3",
            "deny *.evil.test",
            "allow *.test",
        ]);
        let cases: &[(Attempt, bool, Option<usize>)] = &[
            (
                attempt("api.github.com", 443, Some("POST"), Some("/repos/x")),
                false,
                Some(0),
            ),
            (
                attempt("api.github.com", 443, Some("post"), Some("/repos")),
                false,
                Some(0),
            ),
            (
                attempt("api.github.com", 443, Some("POST"), Some("/%72epos")),
                false,
                Some(0),
            ),
            (
                attempt("api.github.com", 443, Some("GET"), Some("/repos/x")),
                true,
                Some(1),
            ),
            (
                attempt("api.github.com", 443, Some("POST"), Some("/user")),
                true,
                Some(1),
            ),
            (attempt("github.com", 443, None, None), true, Some(2)),
            (attempt("github.com", 80, None, None), false, None),
            (
                attempt("registry.npmjs.org", 443, None, None),
                true,
                Some(3),
            ),
            (attempt("npmjs.org", 443, None, None), false, None),
            (
                attempt("example.com", 8080, Some("GET"), Some("/v1/x?y=1")),
                true,
                Some(4),
            ),
            (
                attempt("example.com", 8080, Some("GET"), Some("/v2/x")),
                false,
                None,
            ),
            (
                attempt("example.com", 8080, Some("POST"), Some("/v1/x")),
                false,
                None,
            ),
            (attempt("example.com", 8080, None, None), false, None),
            (
                attempt("example.com", 80, Some("GET"), Some("/v1/x")),
                false,
                None,
            ),
            (attempt("10.1.2.3", 443, None, None), true, Some(5)),
            (attempt("10.1.2.4", 443, None, None), false, None),
            (attempt("a.evil.test", 80, None, None), false, Some(6)),
            (attempt("good.test", 80, None, None), true, Some(7)),
            (attempt("127.0.0.1", 80, None, None), false, None),
        ];
        for (a, allow, rule) in cases {
            let d = p.decide(a);
            assert_eq!((d.allow, d.rule), (*allow, *rule), "{a:?}: {}", d.reason);
        }
    }

    #[test]
    fn first_match_wins_and_default_deny() {
        let p = policy(&["deny github.com", "allow github.com"]);
        assert!(!p.decide(&attempt("github.com", 443, None, None)).allow);
        let p = policy(&["allow github.com", "deny github.com"]);
        assert!(p.decide(&attempt("github.com", 443, None, None)).allow);
        let d = Policy::default().decide(&attempt("github.com", 443, None, None));
        assert!(!d.allow);
        assert_eq!(d.rule, None);
        assert!(d.reason.contains("default deny"));
    }

    #[test]
    fn ip_literals_only_match_exact_rules() {
        let p = policy(&["allow *"]);
        // A suffix that ends in a number would be an IP: refused.
        assert!(Rule::parse("allow *.0.1").is_err());
        assert!(!p.decide(&attempt("127.0.0.1", 80, None, None)).allow);
        assert!(!p.decide(&attempt("::1", 80, None, None)).allow);
        let p = policy(&["allow [::1]", "allow 192.0.2.7"]);
        assert!(p.decide(&attempt("::1", 80, None, None)).allow);
        assert!(p.decide(&attempt("192.0.2.7", 80, None, None)).allow);
    }

    #[test]
    fn numeric_host_spellings_are_ip_literals() {
        for (spelling, ip) in [
            ("167772161", "10.0.0.1"),
            ("0x0a000001", "10.0.0.1"),
            ("0X0A000001", "10.0.0.1"),
            ("10.1", "10.0.0.1"),
            ("10.0.1", "10.0.0.1"),
            ("012.0.0.1", "10.0.0.1"),
            ("0xa.0.0.1", "10.0.0.1"),
            ("10.0.0.1.", "10.0.0.1"),
            ("167772161.", "10.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0", "0.0.0.0"),
            ("0x", "0.0.0.0"),
            ("4294967295", "255.255.255.255"),
            ("169.254.43518", "169.254.169.254"),
            ("[::ffff:10.0.0.1]", "::ffff:10.0.0.1"),
            ("[::FFFF:a00:1]", "::ffff:10.0.0.1"),
        ] {
            assert_eq!(normalize_host(spelling).as_deref(), Some(ip), "{spelling}");
            assert!(is_ip_literal(ip));
        }
        // What inet_aton refuses is no host at all (never a name a `*` could match).
        for bad in [
            "4294967296",
            "1.2.3.4.5",
            "256.0.0.1",
            "10.16777216",
            "10.0.65536",
            "08",
            "1..1",
            "example.1",
            "example.0x1f",
            "+1.2",
        ] {
            assert_eq!(normalize_host(bad), None, "{bad}");
        }
        // Names with numbers that do not end in a number stay names.
        for name in ["1e5", "0xg", "0x1g", "10.0.0.1x", "123.example", "a1"] {
            assert_eq!(normalize_host(name).as_deref(), Some(name), "{name}");
        }
        // So a `*` rule never lets a numeric spelling through.
        let p = policy(&["allow *"]);
        for spelling in ["167772161", "0x0a000001", "10.1", "012.0.0.1", "10.0.0.1."] {
            let host = normalize_host(spelling).unwrap();
            assert!(
                !p.decide(&attempt(&host, 80, None, None)).allow,
                "{spelling}"
            );
        }
    }

    #[test]
    fn cidr_rules_match_ip_literals_in_the_block() {
        let p = policy(&[
            "deny 10.1.0.0/16",
            "allow 10.0.0.0/8:443",
            "allow [fd00::/8]",
        ]);
        let allows = |h: &str, port| p.decide(&attempt(h, port, None, None)).allow;
        assert!(allows("10.2.3.4", 443));
        assert!(!allows("10.2.3.4", 80));
        assert!(!allows("10.1.2.3", 443));
        assert!(!allows("11.0.0.1", 443));
        assert!(allows("fd00:ec2::254", 80));
        assert!(!allows("fe80::1", 80));
        // A v4 block does not contain the mapped form, and names never match a block.
        assert!(!allows("::ffff:10.2.3.4", 443));
        assert!(!allows("ten.example", 443));
        let c = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(c.contains("8.8.8.8".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(HostPattern::Cidr(c).is_ip());
        assert!(HostPattern::Exact("10.0.0.1".into()).is_ip());
        assert!(!HostPattern::Exact("a.test".into()).is_ip());
        assert!(!HostPattern::Any.is_ip());
    }

    #[test]
    fn dotted_paths_are_refused() {
        let p = policy(&["allow example.com GET /allowed/"]);
        for path in [
            "/allowed/../admin",
            "/allowed/%2e%2e/admin",
            "/allowed/%2E./admin",
            "/allowed/..%2fadmin",
            "/allowed\\..\\admin",
            "/allowed/./x",
            "allowed/x",
            "/allowed/%zz",
        ] {
            let d = p.decide(&attempt("example.com", 443, Some("GET"), Some(path)));
            assert!(!d.allow, "{path}");
        }
        assert!(
            p.decide(&attempt(
                "example.com",
                443,
                Some("GET"),
                Some("/allowed/..x/a%2Fb")
            ))
            .allow
        );
    }

    #[test]
    fn connect_plans() {
        let p = policy(&[
            "deny api.github.com POST /repos",
            "allow api.github.com",
            "allow github.com",
            "allow only.test GET /x",
            "deny never.test GET /x",
        ]);
        assert_eq!(
            p.connect_plan("api.github.com", 443),
            ConnectPlan::PerRequest
        );
        assert!(matches!(
            p.connect_plan("github.com", 443),
            ConnectPlan::Decided(Decision {
                allow: true,
                rule: Some(2),
                ..
            })
        ));
        assert_eq!(p.connect_plan("only.test", 443), ConnectPlan::PerRequest);
        assert!(matches!(
            p.connect_plan("never.test", 443),
            ConnectPlan::Decided(Decision { allow: false, .. })
        ));
        assert!(matches!(
            p.connect_plan("other.test", 443),
            ConnectPlan::Decided(Decision {
                allow: false,
                rule: None,
                ..
            })
        ));
    }

    #[test]
    fn origins_label_the_deciding_rule() {
        let label = |s: &str| Some(Arc::<str>::from(s));
        let p = Policy::with_origins(vec![
            (None, Rule::parse("deny a.test").unwrap()),
            (label("template npm"), Rule::parse("allow a.test").unwrap()),
            (
                label("template npm"),
                Rule::parse("allow b.test:443").unwrap(),
            ),
        ]);
        let d = p.decide(&attempt("b.test", 443, None, None));
        assert_eq!((d.allow, d.rule), (true, Some(2)));
        assert_eq!(
            d.reason,
            "allowed by rule 3 (template npm: allow b.test:443)"
        );
        assert_eq!(
            p.rule_label(d.rule).as_deref(),
            Some("template npm: allow b.test:443")
        );
        // The unlabelled rule before it still wins for its host, shown as before.
        let d = p.decide(&attempt("a.test", 443, None, None));
        assert_eq!((d.allow, d.rule), (false, Some(0)));
        assert_eq!(p.rule_label(d.rule).as_deref(), Some("deny a.test"));
        assert_eq!(p.origin(0), None);
        assert_eq!(p.rule_label(None), None);
        assert_eq!(p.rule_label(Some(9)), None);
        // A plain policy labels nothing.
        assert_eq!(
            policy(&["allow a.test"]).rule_label(Some(0)).as_deref(),
            Some("allow a.test")
        );
    }

    #[test]
    fn parse_lines_skips_comments() {
        let p = Policy::parse_lines("# comment\n\nallow a.test\n  deny b.test  \n").unwrap();
        assert_eq!(p.rules.len(), 2);
        assert_eq!(Policy::parse_lines("allow a.test\nbogus").unwrap_err().0, 2);
    }

    #[test]
    fn hostile_strings_do_not_panic() {
        for s in [
            "[", "[]", "[::1", "[::1]x", "a:b:c", ":", "[]:", "é.com", "%", "/%", "/%e",
        ] {
            let _ = Rule::parse(&format!("allow {s}"));
            let _ = split_host_port(s);
            let _ = normalize_host(s);
            let _ = canonical_path(s);
        }
    }
}

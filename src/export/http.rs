//! The little HTTP/1.1 flow speaks to a database: `POST` over plain TCP
//! with a body, one request per connection, the whole answer read (plain
//! or chunked). No TLS: a database on another network is reached through
//! an ssh tunnel (`ssh -L`), as hosts are.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long a connection, a write or a read may take.
const TIMEOUT: Duration = Duration::from_secs(120);

/// `http://[user[:password]@]host[:port][/]`, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl Url {
    pub fn parse(text: &str, default_port: u16) -> Result<Url, String> {
        let rest = text.strip_prefix("http://").ok_or_else(|| {
            if text.starts_with("https://") {
                format!("`{text}`: flow speaks plain HTTP only; reach a TLS endpoint through a tunnel (`ssh -L 8123:localhost:8123 HOST`)")
            } else {
                format!("`{text}` is not an http:// URL")
            }
        })?;
        let rest = rest.split(['/', '?']).next().unwrap_or(rest);
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (user, password) = match auth {
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (Some(a.to_string()), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            // [::1]:8123
            let (h, p) = h
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: an IPv6 address needs its closing `]`"))?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{text}` names no host"));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| format!("`{text}`: `{p}` is not a port"))?,
            None => default_port,
        };
        Ok(Url {
            host,
            port,
            user,
            password,
        })
    }

    /// `host:port` as people write it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `s` percent-encoded for a query string.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An answer: its status code and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `POST path_and_query` with `body`; the whole answer.
pub fn post(url: &Url, path_and_query: &str, body: &[u8]) -> Result<Response, String> {
    let where_ = url.authority();
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {where_}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {where_}"))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("cannot connect to {where_}: {e}"))?;
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let _ = s.set_write_timeout(Some(TIMEOUT));
    let mut head = format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: {where_}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(u) = &url.user {
        let cred = format!("{u}:{}", url.password.as_deref().unwrap_or(""));
        head.push_str(&format!(
            "Authorization: Basic {}\r\n",
            base64(cred.as_bytes())
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("cannot send to {where_}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("no answer from {where_}: {e}"))?;
    parse_response(&raw).map_err(|e| format!("{where_}: {e}"))
}

/// A whole HTTP/1.1 answer taken apart (plain or chunked body).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an answer without its end of headers")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("an answer without a status")?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<usize>().ok();
            }
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let line_end = rest[at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("a chunk without its size line")?;
            let size_text = String::from_utf8_lossy(&rest[at..at + line_end]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("a chunk size `{size_text}`"))?;
            at += line_end + 2;
            if size == 0 {
                break;
            }
            let chunk = rest.get(at..at + size).ok_or("a chunk cut short")?;
            out.extend_from_slice(chunk);
            at += size + 2;
        }
        out
    } else {
        match length {
            Some(n) => rest.get(..n).ok_or("a body cut short")?.to_vec(),
            None => rest.to_vec(),
        }
    };
    Ok(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_come_apart_with_their_credentials_and_port() {
        let u = Url::parse("http://ann:s3cret@db.example:9123/", 8123).expect("a url");
        assert_eq!(
            u,
            Url {
                host: "db.example".into(),
                port: 9123,
                user: Some("ann".into()),
                password: Some("s3cret".into())
            }
        );
        assert_eq!(
            Url::parse("http://[::1]", 8123).expect("v6").authority(),
            "[::1]:8123"
        );
        assert!(
            Url::parse("https://x", 1)
                .unwrap_err()
                .contains("plain HTTP")
        );
        assert!(
            Url::parse("http://x:port", 1)
                .unwrap_err()
                .contains("not a port")
        );
        assert_eq!(base64(b"ann:s3cret"), "YW5uOnMzY3JldA==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(encode("INSERT INTO t"), "INSERT%20INTO%20t");
    }

    #[test]
    fn chunked_and_plain_answers_are_read_whole() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .expect("chunked");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
        let r =
            parse_response(b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nfail").expect("plain");
        assert_eq!((r.status, r.body.as_slice()), (500, &b"fail"[..]));
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab")
                .is_err()
        );
    }
}

//! `ready.log`: a regex matched line by line over a service's output from
//! its first byte, here in flow whatever host the bytes come from.

use regex::bytes::Regex;

/// Matches a regex line by line over streams that grow, whatever host the
/// bytes come from: every transport feeds it the bytes a service wrote, so a
/// `ready.log` pattern means the same (Rust's regex syntax) everywhere.
pub struct LineMatcher {
    re: Regex,
    /// Per stream, the unfinished last line.
    pending: Vec<Vec<u8>>,
}

impl LineMatcher {
    pub fn new(re: Regex, streams: usize) -> LineMatcher {
        LineMatcher {
            re,
            pending: vec![Vec::new(); streams],
        }
    }

    /// Feeds what `stream` gained; true once a line (or the unfinished last
    /// line: a prompt may never end its line) matches.
    pub fn feed(&mut self, stream: usize, bytes: &[u8]) -> bool {
        let Some(pending) = self.pending.get_mut(stream) else {
            return false;
        };
        pending.extend_from_slice(bytes);
        // Complete lines are matched and dropped; the unfinished tail is
        // kept and matched again with what follows.
        let keep_from = pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if pending
            .split(|&b| b == b'\n')
            .any(|line| self.re.is_match(line))
        {
            return true;
        }
        pending.drain(..keep_from);
        false
    }

    pub fn pattern(&self) -> &str {
        self.re.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(re: &str) -> LineMatcher {
        LineMatcher::new(Regex::new(re).expect("regex"), 2)
    }

    #[test]
    fn lines_match_as_they_arrive_in_pieces() {
        let mut m = matcher("ready on port [0-9]+");
        assert!(!m.feed(0, b""));
        assert!(!m.feed(0, b"starting\nready on po"));
        assert!(m.feed(0, b"rt 80"), "an unfinished line matches too");
    }

    #[test]
    fn each_stream_keeps_its_own_unfinished_line() {
        let mut m = matcher("^listening$");
        assert!(!m.feed(0, b"listen"));
        assert!(
            !m.feed(1, b"ing\n"),
            "halves on two streams are not one line"
        );
        assert!(m.feed(1, b"listening\n"));
    }

    #[test]
    fn anchors_hold_per_line_and_bytes_need_not_be_utf8() {
        let mut m = matcher("^up$");
        assert!(!m.feed(0, b"\xff\xfe not up\n"));
        assert!(m.feed(0, b"\xff\nup\n"));
    }
}

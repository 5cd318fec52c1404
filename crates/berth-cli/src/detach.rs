//! The detach key of `berth attach`: Ctrl-b then d.
//!
//! Ctrl-b Ctrl-b sends one literal Ctrl-b; Ctrl-b followed by anything else sends both bytes.
//! A Ctrl-b at the end of one read waits for the next read.

/// Ctrl-b.
pub const PREFIX: u8 = 0x02;

/// Detach key state across reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DetachFilter {
    pending_prefix: bool,
}

impl DetachFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds keyboard bytes; returns the bytes to send to the session and whether to detach.
    /// When it says detach, bytes after the detach key are dropped.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len() + 1);
        for &b in input {
            if self.pending_prefix {
                self.pending_prefix = false;
                match b {
                    b'd' => return (out, true),
                    PREFIX => out.push(PREFIX),
                    other => {
                        out.push(PREFIX);
                        out.push(other);
                    }
                }
            } else if b == PREFIX {
                self.pending_prefix = true;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut f = DetachFilter::new();
        let mut sent = Vec::new();
        for c in chunks {
            let (out, detach) = f.feed(c);
            sent.extend(out);
            if detach {
                return (sent, true);
            }
        }
        (sent, false)
    }

    #[test]
    fn plain_bytes_pass_through() {
        assert_eq!(run(&[b"ls -la\r"]), (b"ls -la\r".to_vec(), false));
    }

    #[test]
    fn ctrl_b_d_detaches() {
        assert_eq!(run(&[b"ab\x02dcd"]), (b"ab".to_vec(), true));
    }

    #[test]
    fn prefix_split_across_reads() {
        assert_eq!(run(&[b"x\x02", b"d"]), (b"x".to_vec(), true));
        assert_eq!(run(&[b"x\x02", b"q"]), (b"x\x02q".to_vec(), false));
    }

    #[test]
    fn double_prefix_is_literal() {
        assert_eq!(run(&[b"\x02\x02d"]), (b"\x02d".to_vec(), false));
        assert_eq!(run(&[b"\x02\x02\x02d"]), (b"\x02".to_vec(), true));
    }

    #[test]
    fn prefix_then_other_sends_both() {
        assert_eq!(run(&[b"\x02c"]), (b"\x02c".to_vec(), false));
        assert_eq!(run(&[b"\x02D"]), (b"\x02D".to_vec(), false));
    }

    #[test]
    fn trailing_prefix_is_held() {
        let mut f = DetachFilter::new();
        assert_eq!(f.feed(b"\x02"), (Vec::new(), false));
        assert_eq!(f.feed(b""), (Vec::new(), false));
        assert_eq!(f.feed(b"d"), (Vec::new(), true));
    }
}

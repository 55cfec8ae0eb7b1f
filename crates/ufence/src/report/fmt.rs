//! Formatting without an allocator: a fixed buffer that implements `core::fmt::Write` and
//! silently truncates, so reports can be built inside a signal handler or `malloc`.

use core::fmt;

/// A stack buffer of `N` bytes that collects formatted text and drops what does not fit.
pub struct BufWriter<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> BufWriter<N> {
    pub const fn new() -> Self {
        BufWriter {
            buf: [0; N],
            len: 0,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    pub fn clear(&mut self) {
        self.len = 0;
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> Default for BufWriter<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for BufWriter<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Shows bytes the watched program controls (its command line, thread names, paths, symbol
/// names, anything read back from a report) as one line of inert text: the one escaping every
/// ufence output uses, the live report and each verb of the command alike.
///
/// Printable text, including non-ASCII UTF-8, is kept; a backslash is doubled, so that the
/// escapes below are never ambiguous; C0 control bytes and DEL show as `\xNN` (`\x1b`, `\x0a`),
/// bytes that are not UTF-8 as `\xNN` too; C1 controls and the bidirectional-override
/// characters (which reorder what a terminal shows) as `\u{NNNN}`. A terminal shown the
/// result cannot be sent an escape sequence, and a newline cannot start a line of its own.
/// Writes as it goes, never allocating (the live report is printed from a signal handler).
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    c if (c as u32) < 0x80 && c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
                    c if c.is_control() || is_bidi_control(c) => {
                        write!(f, "\\u{{{:04x}}}", c as u32)?
                    }
                    c => fmt::Write::write_char(f, c)?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Characters that change the display order of the text around them (Unicode's bidirectional
/// formatting characters: "Trojan Source").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// [`Escaped`] as a `String`, for the command's verbs.
pub fn escape(b: &[u8]) -> String {
    Escaped(b).to_string()
}

/// A NUL-padded C string buffer (thread names) shown as text.
pub fn cstr_bytes(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn truncates_instead_of_failing() {
        let mut w = BufWriter::<4>::new();
        write!(w, "hello").unwrap();
        assert_eq!(w.as_bytes(), b"hell");
    }

    #[test]
    fn escapes_control_bytes() {
        let mut w = BufWriter::<64>::new();
        write!(w, "{}", Escaped(b"a\nb\xff\x1b[2J\\x7f\x7f")).unwrap();
        assert_eq!(
            core::str::from_utf8(w.as_bytes()).unwrap(),
            "a\\x0ab\\xff\\x1b[2J\\\\x7f\\x7f"
        );
        assert_eq!(
            escape("café \u{9b}31m \u{202e}gnp.exe".as_bytes()),
            "café \\u{009b}31m \\u{202e}gnp.exe"
        );
        assert_eq!(escape(b"/usr/bin/plain --x=1"), "/usr/bin/plain --x=1");
    }
}

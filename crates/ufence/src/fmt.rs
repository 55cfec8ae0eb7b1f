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

/// Shows bytes as text, replacing anything that is not printable ASCII with `?`.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &c in self.0 {
            let c = if (0x20..0x7f).contains(&c) { c } else { b'?' };
            fmt::Write::write_char(f, c as char)?;
        }
        Ok(())
    }
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
        let mut w = BufWriter::<16>::new();
        write!(w, "{}", Escaped(b"a\nb\xff")).unwrap();
        assert_eq!(w.as_bytes(), b"a?b?");
    }
}

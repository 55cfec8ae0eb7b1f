//! Text that a watched program controls (thread and function names, paths, host names,
//! command lines) is shown through [`escape`], so that a hostile name cannot move the cursor,
//! clear the screen or fake a line of output. One small function on purpose: the project may
//! swap it for a shared one.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control character (C0, DEL, C1) written as `\xNN` (or `\u{NNNN}` above
/// 0xff) and backslashes doubled; borrowed unchanged when there is nothing to escape.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() && (c as u32) <= 0xff => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(escape("use_object"), "use_object");
        assert!(matches!(escape("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(escape("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape("line\nfake"), "line\\x0afake");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("c1\u{9b}x"), "c1\\x9bx");
        assert_eq!(escape("é ok"), "é ok");
    }
}

//! The one table of options. Each option is declared once, in `declare_options!` below, with its
//! type, default, bounds and one-line doc; the parser, the `--help` text of the `ufence` command,
//! the README table and the validation of runtime changes all come from that declaration.
//!
//! Parsing works on bytes and never allocates: the preload reads `UFENCE_OPTIONS` from inside the
//! first `malloc` call, where allocating would recurse.

use crate::fmt::BufWriter;
use core::fmt::Write;

/// What to do after reporting an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Report once per object, make the faulting page accessible and go on (KFENCE's behaviour).
    Continue,
    /// Report, then end the process with SIGABRT.
    Abort,
}

/// A short text (a path, a pattern) held inline: options are parsed before any allocator is
/// usable.
#[derive(Clone, Copy)]
pub struct InlineText {
    len: u16,
    buf: [u8; 256],
}

impl InlineText {
    pub const EMPTY: InlineText = InlineText {
        len: 0,
        buf: [0; 256],
    };
    /// The path's bytes (empty when unset).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::fmt::Debug for InlineText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(core::str::from_utf8(self.as_bytes()).unwrap_or("?"))
    }
}

/// A value type an option can have: how to parse it from text and print it back.
pub trait OptionValue: Sized + Copy {
    /// The type's name in `--help` (e.g. `int`, `0|1`).
    const KIND: &'static str;
    fn parse(text: &[u8], min: u64, max: u64) -> Option<Self>;
    fn write(&self, out: &mut dyn Write) -> core::fmt::Result;
}

impl OptionValue for u64 {
    const KIND: &'static str = "int";
    fn parse(text: &[u8], min: u64, max: u64) -> Option<u64> {
        if text.is_empty() || text.len() > 20 {
            return None;
        }
        let mut v: u64 = 0;
        for &c in text {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
        }
        (min..=max).contains(&v).then_some(v)
    }
    fn write(&self, out: &mut dyn Write) -> core::fmt::Result {
        write!(out, "{self}")
    }
}

impl OptionValue for bool {
    const KIND: &'static str = "0|1";
    fn parse(text: &[u8], _: u64, _: u64) -> Option<bool> {
        match text {
            b"1" | b"true" | b"yes" | b"on" => Some(true),
            b"0" | b"false" | b"no" | b"off" => Some(false),
            _ => None,
        }
    }
    fn write(&self, out: &mut dyn Write) -> core::fmt::Result {
        out.write_str(if *self { "1" } else { "0" })
    }
}

impl OptionValue for OnError {
    const KIND: &'static str = "continue|abort";
    fn parse(text: &[u8], _: u64, _: u64) -> Option<OnError> {
        match text {
            b"continue" => Some(OnError::Continue),
            b"abort" => Some(OnError::Abort),
            _ => None,
        }
    }
    fn write(&self, out: &mut dyn Write) -> core::fmt::Result {
        out.write_str(match self {
            OnError::Continue => "continue",
            OnError::Abort => "abort",
        })
    }
}

impl OptionValue for InlineText {
    const KIND: &'static str = "text";
    fn parse(text: &[u8], _: u64, _: u64) -> Option<InlineText> {
        if text.is_empty() || text.len() >= 256 || text.contains(&0) {
            return None;
        }
        let mut p = InlineText::EMPTY;
        p.buf[..text.len()].copy_from_slice(text);
        p.len = text.len() as u16;
        Some(p)
    }
    fn write(&self, out: &mut dyn Write) -> core::fmt::Result {
        match core::str::from_utf8(self.as_bytes()) {
            Ok(s) if !s.is_empty() => out.write_str(s),
            _ => out.write_str("(unset)"),
        }
    }
}

/// A range of request sizes in bytes, `MIN-MAX` (inclusive) or a single size; `any` for all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeRange {
    pub min: usize,
    pub max: usize,
}

impl SizeRange {
    pub const ANY: SizeRange = SizeRange {
        min: 0,
        max: usize::MAX,
    };
    pub fn contains(&self, size: usize) -> bool {
        self.min <= size && size <= self.max
    }
    /// True when no size in the range can ever be sampled: objects larger than `largest`
    /// ([`Options::largest_sampled`]) never are (see README, "Limits").
    pub fn beyond(&self, largest: usize) -> bool {
        self.min > largest
    }
    /// The warning for a range that is [`beyond`](Self::beyond) `largest`, without the
    /// `ufence: warning: ` prefix.
    pub fn write_beyond(&self, largest: usize, out: &mut dyn Write) -> core::fmt::Result {
        out.write_str("sample_sizes=")?;
        self.write(out)?;
        write!(
            out,
            " can never be sampled (objects over {largest} bytes never are: max_object_size, num_large_objects): nothing will be sampled"
        )
    }
}

impl Options {
    /// Pages of a large slot: `max_object_size` rounded up to whole pages, at least two (a
    /// one-page large slot would only serve page-aligned one-page requests).
    pub fn large_pages(&self) -> usize {
        let page = crate::sys::page_size();
        (self.max_object_size as usize).div_ceil(page).max(2)
    }

    /// The largest request that can ever go to the pool.
    pub fn largest_sampled(&self) -> usize {
        if self.num_large_objects == 0 {
            crate::sys::page_size()
        } else {
            self.large_pages() * crate::sys::page_size()
        }
    }
}

impl OptionValue for SizeRange {
    const KIND: &'static str = "MIN-MAX|any";
    fn parse(text: &[u8], _: u64, _: u64) -> Option<SizeRange> {
        if text == b"any" {
            return Some(SizeRange::ANY);
        }
        let num = |t: &[u8]| <u64 as OptionValue>::parse(t, 0, u64::MAX).map(|v| v as usize);
        let r = match text.iter().position(|&c| c == b'-') {
            Some(i) => SizeRange {
                min: num(&text[..i])?,
                max: num(&text[i + 1..])?,
            },
            None => {
                let v = num(text)?;
                SizeRange { min: v, max: v }
            }
        };
        (r.min <= r.max).then_some(r)
    }
    fn write(&self, out: &mut dyn Write) -> core::fmt::Result {
        if *self == SizeRange::ANY {
            out.write_str("any")
        } else {
            write!(out, "{}-{}", self.min, self.max)
        }
    }
}

/// Describes one option for `--help`, docs and validation in the command-line tool.
#[derive(Clone, Copy, Debug)]
pub struct OptionSpec {
    pub name: &'static str,
    pub kind: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
    /// True when the option can be changed while the process runs.
    pub runtime: bool,
    /// Bounds of an integer option (inclusive); unused for other kinds.
    pub min: u64,
    pub max: u64,
}

impl OptionSpec {
    /// The spec of option `key`.
    pub fn find(key: &[u8]) -> Option<&'static OptionSpec> {
        SPECS.iter().find(|s| s.name.as_bytes() == key)
    }
}

/// What a value of an option must look like, for error messages: `an integer from 0 to 100`,
/// `0|1`, `continue|abort`.
impl core::fmt::Display for OptionSpec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.kind == <u64 as OptionValue>::KIND {
            write!(f, "an integer from {} to {}", self.min, self.max)
        } else {
            f.write_str(self.kind)
        }
    }
}

/// Why an option could not be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError {
    UnknownKey,
    BadValue,
    /// A quoted value without its closing quote, or with text glued after it.
    BadQuote,
}

macro_rules! declare_options {
    ($( $(#[doc = $doc:literal])+ $name:ident : $ty:ty = $default:expr, $dflt_text:literal,
        range $min:literal ..= $max:literal, runtime $rt:literal; )+) => {
        /// Every option's value. `Options::DEFAULT` holds the defaults of the table.
        #[derive(Clone, Copy, Debug)]
        pub struct Options {
            $( $(#[doc = $doc])+ pub $name: $ty, )+
        }

        impl Options {
            /// The defaults, as declared in the table.
            pub const DEFAULT: Options = Options { $( $name: $default, )+ };

            $(
                /// Builder: returns these options with this one changed (not range-checked:
                /// code is trusted; `UFENCE_OPTIONS` still overrides it at start).
                pub const fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )+

            /// Sets one option from its textual value, checking type and bounds.
            pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), OptionError> {
                $(
                    if key == stringify!($name).as_bytes() {
                        self.$name = <$ty as OptionValue>::parse(value, $min, $max)
                            .ok_or(OptionError::BadValue)?;
                        return Ok(());
                    }
                )+
                Err(OptionError::UnknownKey)
            }

            /// Writes the value of option `key`; false if there is no such option.
            pub fn write_value(&self, key: &str, out: &mut dyn Write) -> bool {
                $(
                    if key == stringify!($name) {
                        return OptionValue::write(&self.$name, out).is_ok();
                    }
                )+
                false
            }

            /// Writes `key=value` pairs for every option, separated by spaces.
            pub fn write_all(&self, out: &mut dyn Write) -> core::fmt::Result {
                let mut first = true;
                $(
                    if !first { out.write_char(' ')?; }
                    first = false;
                    out.write_str(concat!(stringify!($name), "="))?;
                    OptionValue::write(&self.$name, out)?;
                )+
                let _ = first;
                Ok(())
            }
        }

        /// The table, for `--help`, the docs and validation.
        pub const SPECS: &[OptionSpec] = &[
            $( OptionSpec {
                name: stringify!($name),
                kind: <$ty as OptionValue>::KIND,
                default: $dflt_text,
                doc: concat!($($doc),+).trim_ascii_start(),
                runtime: $rt,
                min: $min,
                max: $max,
            }, )+
        ];
    };
}

declare_options! {
    /// 0 turns sampling off; the fast path then costs one predictable branch.
    enabled: bool = true, "1", range 0..=1, runtime true;
    /// Milliseconds between samples (KFENCE): once the interval has passed, the next allocation is sampled; the first deadline is random within the interval. 0 = off.
    sample_interval: u64 = 100, "100", range 0..=86_400_000, runtime true;
    /// Count-based sampling (GWP-ASan): each allocation is sampled with probability 1/N; 1 samples every allocation while slots last. 0 = off.
    sample_rate: u64 = 0, "0", range 0..=1_000_000_000, runtime true;
    /// Slots in the guarded pool (KFENCE's default is 255); each costs two pages of address space.
    num_objects: u64 = 255, "255", range 1..=65_535, runtime false;
    /// Slots for objects over a page (up to max_object_size) and page-overaligned requests, in a region of their own; each costs max_object_size plus one guard page of address space, and memory only for the pages a live object uses. 0 = objects over a page are never sampled.
    num_large_objects: u64 = 64, "64", range 0..=4_096, runtime false;
    /// Bytes: the largest object sampled, from 8 KiB to 1 MiB (rounded up to whole pages); the size of a large slot.
    max_object_size: u64 = 65_536, "65536", range 8_192..=1_048_576, runtime false;
    /// After an error: `continue` reports once per object and goes on (KFENCE), `abort` reports then raises SIGABRT.
    on_error: OnError = OnError::Continue, "continue", range 0..=0, runtime true;
    /// Percent of wall time ufence may spend on sampled allocations and frees (after the first 50 ms of such work); beyond it, sampling pauses. Bounds the cost of high rates such as sample_rate=1. 0 = no limit.
    max_overhead: u64 = 50, "50", range 0..=10_000, runtime true;
    /// Percent of the pool in use above which a sample from a site that already has an object in the pool is given up (KFENCE), so that the last slots go to new sites; not applied at sample_rate=1. 100 = never skip.
    skip_covered_thresh: u64 = 75, "75", range 0..=100, runtime true;
    /// 1: the interval follows pool occupancy: sample_interval while at most half the pool is in use, growing geometrically to adaptive_max as it fills, so that objects keep cycling through the pool.
    adaptive: bool = false, "0", range 0..=1, runtime true;
    /// Milliseconds: the longest interval adaptive=1 may choose (when the pool is full).
    adaptive_max: u64 = 10_000, "10000", range 1..=86_400_000, runtime true;
    /// Sample only requests of these sizes in bytes (MIN-MAX, or one size), for hunting one bug; the interval's sample waits for a request that fits.
    sample_sizes: SizeRange = SizeRange::ANY, "any", range 0..=0, runtime true;
    /// Sample only allocations with this text in the module or function name of one of their top frames (hunting one crash: best with sample_rate, as a sample that does not match is given up).
    sample_only: InlineText = InlineText::EMPTY, "(unset)", range 0..=0, runtime false;
    /// Never sample allocations with this text in the module or function name of one of their top frames.
    skip: InlineText = InlineText::EMPTY, "(unset)", range 0..=0, runtime false;
    /// 1: capture stacks from cached, pre-parsed unwind rules (falling back to libgcc's unwinder where they do not apply); 0: libgcc's unwinder for every stack, as ASan's `fast_unwind_on_malloc=0`. Both give the same frames; 1 is several times cheaper.
    fast_unwind: bool = true, "1", range 0..=1, runtime false;
    /// Extra consecutive allocations sampled after each interval expires (KFENCE `burst`).
    burst: u64 = 0, "0", range 0..=1_000, runtime true;
    /// Also write each report as one JSON file into this directory (schema: docs/report-schema.md); `ufence symbolize` reads them.
    report_dir: InlineText = InlineText::EMPTY, "(unset)", range 0..=0, runtime false;
    /// Exit status of a process that reported a bug and would have exited 0 (the sanitizers' `exitcode`); 0 keeps the program's own status. For tests: `ufence run --sample_rate 1 --exitcode 23`.
    exitcode: u64 = 0, "0", range 0..=255, runtime false;
    /// 1: report a sampled object released by a routine of another family than the one that allocated it (`operator new[]` vs `operator delete`, `malloc` vs `operator delete`, ...; AddressSanitizer's `alloc_dealloc_mismatch`). The object is released all the same. 0 for code bases that mix them on purpose.
    alloc_dealloc_mismatch: bool = true, "1", range 0..=1, runtime false;
    /// Path of the `ufence` binary that names inlined functions in reports (run at report time, with no environment; the in-process line tables are used when it is missing, fails or is late). Unset: the `ufence` beside libufence.so (`ufence run` passes itself). 0: never run it.
    symbolizer: InlineText = InlineText::EMPTY, "(unset)", range 0..=0, runtime false;
    /// Milliseconds a report waits for the symbolizer before it is killed and the report goes on without it.
    symbolizer_timeout: u64 = 2_000, "2000", range 1..=4_000, runtime false;
}

impl Default for Options {
    fn default() -> Self {
        Options::DEFAULT
    }
}

fn is_separator(c: u8) -> bool {
    matches!(c, b':' | b',' | b' ' | b'\t' | b'\n' | b'\r')
}

/// Applies a whole option string (`key=value` pairs separated by `:`, `,` or white space), as
/// sanitizers read theirs. A value may be quoted, `key='a b'` or `key="a:b"` (no escapes inside:
/// the same quote ends it), so that it can hold separators; a quoted value never runs into the
/// next pair. Each bad pair is passed to `warn` and skipped; the rest still apply. An
/// unterminated quote takes the rest of the string with it (it is one bad pair), so that text
/// meant as a value is never read as options.
pub fn parse_into(opts: &mut Options, text: &[u8], warn: &mut dyn FnMut(&[u8], OptionError)) {
    let mut i = 0;
    while i < text.len() {
        if is_separator(text[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && !is_separator(text[i]) && text[i] != b'=' {
            i += 1;
        }
        let key = &text[start..i];
        if i >= text.len() || text[i] != b'=' {
            // A key without a value.
            warn(
                key,
                opts.set(key, b"").err().unwrap_or(OptionError::BadValue),
            );
            continue;
        }
        i += 1;
        let value;
        if i < text.len() && matches!(text[i], b'\'' | b'"') {
            let quote = text[i];
            let open = i + 1;
            match text[open..].iter().position(|&c| c == quote) {
                Some(n) => {
                    value = &text[open..open + n];
                    i = open + n + 1;
                    if i < text.len() && !is_separator(text[i]) {
                        // `key='a'b`: not one quoted value; skip to the next separator.
                        while i < text.len() && !is_separator(text[i]) {
                            i += 1;
                        }
                        warn(&text[start..i], OptionError::BadQuote);
                        continue;
                    }
                }
                None => {
                    warn(&text[start..], OptionError::BadQuote);
                    return;
                }
            }
        } else {
            let v = i;
            while i < text.len() && !is_separator(text[i]) {
                i += 1;
            }
            value = &text[v..i];
        }
        if let Err(e) = opts.set(key, value) {
            warn(&text[start..i], e);
        }
    }
}

/// How `value` must be written in an option string to be read back as exactly `value`: as it
/// is when it holds no separator or quote, else quoted with a quote character it does not hold.
/// None when it cannot be (it holds both quote characters, or is empty).
pub fn quote_value(value: &str) -> Option<String> {
    let plain = !value.is_empty()
        && !value
            .bytes()
            .any(|c| is_separator(c) || c == b'\'' || c == b'"');
    if plain {
        Some(value.to_string())
    } else if value.is_empty() {
        None
    } else if !value.contains('\'') {
        Some(format!("'{value}'"))
    } else if !value.contains('"') {
        Some(format!("\"{value}\""))
    } else {
        None
    }
}

/// Applies `UFENCE_OPTIONS` over `opts`, printing one warning line to stderr per bad pair.
pub fn apply_env(opts: &mut Options) {
    if crate::sys::secure_execution() {
        // A setuid or setgid program: its environment is its unprivileged caller's, who must
        // not choose where a privileged process writes files (report_dir) nor what it costs
        // (sample_rate=1). As glibc and the sanitizers do, the program's own defaults only.
        if crate::sys::getenv(c"UFENCE_OPTIONS").is_some() {
            crate::sys::write_all(
                2,
                b"ufence: note: setuid/setgid program (secure execution): UFENCE_OPTIONS ignored\n",
            );
        }
        return;
    }
    apply_env_text(opts);
    if opts.sample_sizes.beyond(opts.largest_sampled()) {
        let mut line = BufWriter::<200>::new();
        let _ = line.write_str("ufence: warning: ");
        let _ = opts
            .sample_sizes
            .write_beyond(opts.largest_sampled(), &mut line);
        let _ = line.write_str("\n");
        crate::sys::write_all(2, line.as_bytes());
    }
}

fn apply_env_text(opts: &mut Options) {
    if let Some(text) = crate::sys::getenv(c"UFENCE_OPTIONS") {
        parse_into(opts, text, &mut |pair, err| {
            let mut line = BufWriter::<320>::new();
            let shown = &pair[..pair.len().min(200)];
            let _ = match err {
                OptionError::UnknownKey => writeln!(
                    line,
                    "ufence: warning: unknown option in UFENCE_OPTIONS: '{}'; ignored",
                    crate::fmt::Escaped(shown)
                ),
                OptionError::BadQuote => writeln!(
                    line,
                    "ufence: warning: unbalanced quote in UFENCE_OPTIONS: '{}'; ignored",
                    crate::fmt::Escaped(shown)
                ),
                OptionError::BadValue => {
                    let key = pair.split(|&c| c == b'=').next().unwrap_or_default();
                    writeln!(
                        line,
                        "ufence: warning: bad value in UFENCE_OPTIONS: '{}' (expects {}); keeping the default",
                        crate::fmt::Escaped(shown),
                        OptionSpec::find(key).map_or(&"a value" as &dyn core::fmt::Display, |s| s as _)
                    )
                }
            };
            crate::sys::write_all(2, line.as_bytes());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Options, usize) {
        let mut o = Options::DEFAULT;
        let mut bad = 0;
        parse_into(&mut o, text.as_bytes(), &mut |_, _| bad += 1);
        (o, bad)
    }

    #[test]
    fn separators_and_values() {
        let (o, bad) = parse("sample_rate=7:num_objects=10, on_error=abort enabled=0\tburst=3");
        assert_eq!(bad, 0);
        assert_eq!(o.sample_rate, 7);
        assert_eq!(o.num_objects, 10);
        assert_eq!(o.on_error, OnError::Abort);
        assert!(!o.enabled);
        assert_eq!(o.burst, 3);
    }

    #[test]
    fn bad_pairs_keep_defaults_and_the_rest_applies() {
        let (o, bad) =
            parse("num_objects=0:sample_rate=x:bogus=1:sample_interval=-5:noequals:burst=2");
        assert_eq!(bad, 5);
        assert_eq!(o.num_objects, 255);
        assert_eq!(o.sample_rate, 0);
        assert_eq!(o.sample_interval, 100);
        assert_eq!(o.burst, 2);
    }

    #[test]
    fn overflow_and_range() {
        let (o, bad) = parse("sample_rate=99999999999999999999999:burst=1001");
        assert_eq!(bad, 2);
        assert_eq!(o.sample_rate, 0);
        assert_eq!(o.burst, 0);
    }

    #[test]
    fn specs_match_defaults() {
        let mut text = BufWriter::<1024>::new();
        Options::DEFAULT.write_all(&mut text).unwrap();
        let s = core::str::from_utf8(text.as_bytes()).unwrap();
        for spec in SPECS {
            let needle = format!("{}={}", spec.name, spec.default);
            assert!(s.contains(&needle), "{needle} not in {s}");
        }
    }

    #[test]
    fn size_ranges() {
        let (o, bad) = parse("sample_sizes=16-64");
        assert_eq!(bad, 0);
        assert!(o.sample_sizes.contains(16) && o.sample_sizes.contains(64));
        assert!(!o.sample_sizes.contains(65) && !o.sample_sizes.contains(15));
        let (o, _) = parse("sample_sizes=100");
        assert!(o.sample_sizes.contains(100) && !o.sample_sizes.contains(101));
        let (o, bad) = parse("sample_sizes=64-16:sample_sizes=x-1:sample_sizes=-");
        assert_eq!(bad, 3);
        assert_eq!(o.sample_sizes, SizeRange::ANY);
    }

    fn parse_with_warnings(text: &str) -> (Options, Vec<(String, OptionError)>) {
        let mut o = Options::DEFAULT;
        let mut bad = Vec::new();
        parse_into(&mut o, text.as_bytes(), &mut |p, e| {
            bad.push((String::from_utf8_lossy(p).into_owned(), e))
        });
        (o, bad)
    }

    #[test]
    fn quoted_values_hold_separators_and_never_inject() {
        let (o, bad) =
            parse_with_warnings("report_dir='/tmp/my reports:a,b' skip=\"it's:x\",burst=2");
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(o.report_dir.as_bytes(), b"/tmp/my reports:a,b");
        assert_eq!(o.skip.as_bytes(), b"it's:x");
        assert_eq!(o.burst, 2);
        // What looks like an option inside a quoted value stays in the value.
        let (o, bad) = parse_with_warnings("skip='zzz:enabled=0'");
        assert!(bad.is_empty(), "{bad:?}");
        assert!(o.enabled);
        assert_eq!(o.skip.as_bytes(), b"zzz:enabled=0");
        // An unterminated quote swallows the rest: one warning, nothing after it applies.
        let (o, bad) = parse_with_warnings("burst=1:skip='zzz:enabled=0");
        assert_eq!(
            bad,
            vec![("skip='zzz:enabled=0".to_string(), OptionError::BadQuote)]
        );
        assert!(o.enabled);
        assert_eq!(o.burst, 1);
        // Text glued after a closing quote: that pair is bad, the next one applies.
        let (o, bad) = parse_with_warnings("skip='a'b:burst=3");
        assert_eq!(bad, vec![("skip='a'b".to_string(), OptionError::BadQuote)]);
        assert!(o.skip.is_empty());
        assert_eq!(o.burst, 3);
    }

    #[test]
    fn quote_value_round_trips() {
        for v in [
            "/tmp/plain",
            "/tmp/my reports",
            "a:b,c d",
            "it's",
            "say \"hi\"",
            "x=y",
        ] {
            let q = quote_value(v).unwrap();
            let (o, bad) = parse_with_warnings(&format!("skip={q}:burst=4"));
            assert!(bad.is_empty(), "{v}: {bad:?}");
            assert_eq!(o.skip.as_bytes(), v.as_bytes(), "{q}");
            assert_eq!(o.burst, 4);
        }
        assert_eq!(quote_value("both ' and \""), None);
        assert_eq!(quote_value(""), None);
    }

    #[test]
    fn path_values() {
        assert_eq!(
            InlineText::parse(b"/tmp/x", 0, 0).unwrap().as_bytes(),
            b"/tmp/x"
        );
        assert!(InlineText::parse(&[b'a'; 300], 0, 0).is_none());
        assert!(InlineText::parse(b"", 0, 0).is_none());
    }
}

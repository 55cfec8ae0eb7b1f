//! Reading ufence's JSON reports (`docs/report-schema.md`) for triage: only the members that
//! grouping needs are kept; the rest of a report is skipped by the parser without being built.

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// How many frames of the access stack make a bug's identity (as the report's `signature`).
pub const KEY_FRAMES: usize = 3;

/// One frame as a report records it.
#[derive(Deserialize, Debug, Default, Clone)]
pub struct Frame<'a> {
    #[serde(borrow, default)]
    pub module: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub build_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub offset: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub function: Option<Cow<'a, str>>,
}

impl Frame<'_> {
    /// The frame's offset in its module, parsed.
    pub fn offset(&self) -> Option<u64> {
        u64::from_str_radix(self.offset.as_deref()?.strip_prefix("0x")?, 16).ok()
    }
}

/// The access stack: its top [`KEY_FRAMES`] frames, and every distinct (module, build-id) it
/// passes through (to find the executable's build).
#[derive(Debug, Default)]
pub struct Stack<'a> {
    pub top: Vec<Frame<'a>>,
    pub modules: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub depth: usize,
}

impl<'de: 'a, 'a> Deserialize<'de> for Stack<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Stack<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of frames")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Stack<'a>, A::Error> {
                let mut s = Stack::default();
                while let Some(f) = seq.next_element::<Frame<'a>>()? {
                    s.depth += 1;
                    if let (Some(m), Some(b)) = (&f.module, &f.build_id) {
                        if !s.modules.iter().any(|(mm, bb)| mm == m && bb == b) {
                            s.modules.push((m.clone(), b.clone()));
                        }
                    }
                    if s.top.len() < KEY_FRAMES {
                        s.top.push(f);
                    }
                }
                Ok(s)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize, Debug)]
pub struct Access<'a> {
    #[serde(borrow)]
    pub stack: Stack<'a>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Process<'a> {
    #[serde(borrow, default)]
    pub executable: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub hostname: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Time {
    #[serde(default)]
    pub unix_ns: Option<u64>,
}

/// The parts of a report that triage uses.
#[derive(Deserialize, Debug)]
pub struct Report<'a> {
    #[serde(borrow)]
    pub schema: Cow<'a, str>,
    pub version: u64,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub title: Cow<'a, str>,
    #[serde(borrow, default)]
    pub function: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub signature: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub access: Access<'a>,
    #[serde(borrow, default)]
    pub process: Option<Process<'a>>,
    #[serde(default)]
    pub time: Option<Time>,
}

impl<'a> Report<'a> {
    /// Parses and checks one report; the error is one line saying why it is not one.
    pub fn parse(bytes: &'a [u8]) -> Result<Report<'a>, String> {
        // A quick look first, so that foreign JSON gets a clearer reason than a missing field.
        let r: Report = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) if e.is_data() => {
                let foreign = !bytes.windows(15).any(|w| w == b"\"ufence-report\"");
                return Err(if foreign {
                    "not a ufence report (no \"schema\": \"ufence-report\")".into()
                } else {
                    format!("malformed ufence report ({e})")
                });
            }
            Err(e) if e.is_eof() => return Err(format!("truncated JSON ({e})")),
            Err(e) => return Err(format!("invalid JSON ({e})")),
        };
        if r.schema != "ufence-report" {
            return Err("not a ufence report (no \"schema\": \"ufence-report\")".into());
        }
        if r.version != 1 {
            return Err(format!(
                "report schema version {} is not supported (1 is)",
                r.version
            ));
        }
        Ok(r)
    }

    pub fn hostname(&self) -> Option<&str> {
        self.process.as_ref()?.hostname.as_deref()
    }

    pub fn executable(&self) -> Option<&str> {
        self.process.as_ref()?.executable.as_deref()
    }

    /// The executable's build-id, from the access stack's frames in it.
    pub fn exe_build_id(&self) -> Option<&str> {
        let exe = self.executable()?;
        self.access
            .stack
            .modules
            .iter()
            .find(|(m, _)| m == exe)
            .map(|(_, b)| b.as_ref())
    }

    pub fn unix_ns(&self) -> Option<u64> {
        self.time.as_ref()?.unix_ns
    }
}

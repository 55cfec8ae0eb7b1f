//! `ufence plan --config FILE`: the plan's inputs as a small TOML file (docs/plan-example.toml).
//!
//! Its keys are the flags' names (`long-lived`, or `long_lived`), its values what the flags take
//! (numbers, or strings such as `"1%"` and `"7d"`); they become flags placed before those of the
//! command line, which therefore override them, and go through the same checks. Unknown keys
//! and values of the wrong type are refused in one line naming the key.

use clap::ArgMatches;
use std::path::Path;

/// The keys a plan file may hold: every value the `plan` verb takes, and `all`.
const KEYS: &[&str] = &[
    "machines",
    "rate",
    "from",
    "all",
    "long-lived",
    "lifetime",
    "long-lived-sites",
    "bug-per-hour",
    "kind",
    "bytes",
    "access",
    "delay",
    "object-size",
    "align",
    "within",
    "cpu",
    "mib",
    "sample-cost-us",
    "format",
];

/// The flags a plan file stands for, in the file's order.
pub fn args(path: &Path) -> Result<Vec<String>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(String::new(), |s| {
            format!(" line {}", line_of(&text, s.start))
        });
        // toml's message can span lines (a snippet); its first line says what is wrong.
        let msg = e.message().lines().next().unwrap_or("").trim().to_string();
        format!("{shown}{line}: {msg}")
    })?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let name = key.replace('_', "-");
        if !KEYS.contains(&name.as_str()) {
            return Err(format!(
                "{shown}: unknown key '{key}' (known: {})",
                KEYS.join(", ")
            ));
        }
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) if name == "all" => {
                if *b {
                    out.push("--all".to_string());
                }
                continue;
            }
            other => {
                return Err(format!(
                    "{shown}: key '{key}': {} is not {}",
                    other.type_str(),
                    if name == "all" {
                        "true or false"
                    } else {
                        "a number or a string"
                    }
                ))
            }
        };
        if name == "all" {
            return Err(format!(
                "{shown}: key '{key}': '{text}' is not true or false"
            ));
        }
        out.push(format!("--{name}"));
        out.push(text);
    }
    Ok(out)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The `plan` verb's matches with the file of `--config` under the command line's flags: the
/// verb parsed again with the file's flags first (a later flag overrides an earlier one).
pub fn merged(m: &ArgMatches, plan: clap::Command) -> Result<Option<ArgMatches>, String> {
    let Some(path) = m.get_one::<String>("config") else {
        return Ok(None);
    };
    let mut argv = vec!["plan".to_string()];
    argv.extend(args(Path::new(path))?);
    // The command line's own arguments to `plan`, after the verb.
    let cmdline: Vec<String> = std::env::args().collect();
    let at = cmdline
        .iter()
        .position(|a| a == "plan")
        .ok_or("cannot find the verb in the command line")?;
    argv.extend(cmdline[at + 1..].iter().cloned());
    plan.args_override_self(true)
        .try_get_matches_from(argv)
        .map(Some)
        .map_err(|e| {
            let e = e.to_string();
            let first = e.lines().next().unwrap_or("").trim();
            first.strip_prefix("error: ").unwrap_or(first).to_string()
        })
}

//! `ufence exporter`: serves `/metrics` in the Prometheus text format over HTTP (the scrape is
//! `ufence_fleet::exporter`). Loopback by default: the metrics name the host's programs, and a
//! wildcard address is a choice the operator makes with `--listen`.

use clap::ArgMatches;
use std::path::PathBuf;
use std::time::Duration;
use ufence_fleet::exporter::Exporter;

/// 9477: next to the node exporter's 9100 range of exporter ports, and free on this machine's
/// usual services.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

pub fn main(m: &ArgMatches) -> Result<u8, String> {
    let dirs = |name: &str| -> Vec<PathBuf> {
        m.get_many::<PathBuf>(name)
            .map(|d| d.cloned().collect())
            .unwrap_or_default()
    };
    let runtime_dirs = dirs("runtime-dir");
    for d in &runtime_dirs {
        ufence_fleet::runtime::check_dir(d)?;
    }
    let report_dirs = dirs("report-dir");
    for d in &report_dirs {
        if !d.is_dir() {
            return Err(format!("--report-dir {}: not a directory", d.display()));
        }
    }
    let starve = *m.get_one::<u64>("starve-after").unwrap();
    let mut exporter = Exporter::new(runtime_dirs, report_dirs, Duration::from_secs(starve));
    if m.get_flag("once") {
        print!("{}", exporter.scrape());
        return Ok(0);
    }
    let listen = m.get_one::<String>("listen").unwrap();
    let server = tiny_http::Server::http(listen.as_str())
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = match server.server_addr() {
        tiny_http::ListenAddr::IP(a) => a.to_string(),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    };
    eprintln!("ufence: exporter serving http://{addr}/metrics");
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("").to_string();
        let resp = match (req.method(), path.as_str()) {
            (tiny_http::Method::Get, "/metrics") => {
                let body = exporter.scrape();
                tiny_http::Response::from_string(body).with_header(header(
                    "Content-Type",
                    "text/plain; version=0.0.4; charset=utf-8",
                ))
            }
            (tiny_http::Method::Get, "/") => {
                tiny_http::Response::from_string("ufence exporter: metrics at /metrics\n")
                    .with_header(header("Content-Type", "text/plain; charset=utf-8"))
            }
            _ => tiny_http::Response::from_string("not found\n").with_status_code(404),
        };
        // A client that went away is its own problem, never the exporter's.
        let _ = req.respond(resp);
    }
    Ok(0)
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("a valid constant header")
}

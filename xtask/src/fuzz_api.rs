//! `cargo xtask fuzz-api`: schemathesis (PyPI) against the OpenAPI document served by
//! a real terminal-server, checking for 5xx answers and responses that break the
//! documented schema. Not part of `ci` (it takes a while and needs PyPI).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

const TOKEN: &str = "fuzz-admin-token-0123456789";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let examples = args.first().map(String::as_str).unwrap_or("100");
    if Command::new("schemathesis").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("schemathesis not found; installing it from PyPI (pip install schemathesis)");
        crate::run(Command::new("python3").args(["-m", "pip", "install", "-q", "schemathesis"]))?;
    }
    crate::run(crate::cargo().args(["build", "-p", "terminal-server"]))?;
    let target = std::env::var("CARGO_TARGET_DIR").map(Into::into).unwrap_or_else(|_| root.join("target"));
    let data = std::env::temp_dir().join(format!("tillmesh-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut server = Command::new(target.join("debug/terminal-server"))
        .args(["--listen", "127.0.0.1:0", "--discovery", "off", "--admin-token", TOKEN])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting terminal-server")?;
    let stdout = server.stdout.take().context("stdout")?;
    let mut url = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(u) = line.strip_prefix("listening on ") {
            url = Some(u.to_string());
            break;
        }
    }
    let Some(url) = url else {
        let _ = server.kill();
        bail!("terminal-server did not start");
    };
    let result = crate::run(
        Command::new("schemathesis")
            .args(["run", &format!("{url}/api/openapi.json")])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .args(["-n", examples, "--request-timeout", "30"])
            // The event stream never ends; it is covered by the integration tests.
            .args(["--exclude-path", "/api/events"])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            ]),
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
    result
}

//! `cargo xtask tidy`: checks the architecture invariants of docs/ARCHITECTURE.md with
//! `cargo metadata`, and that every Rust file starts with a `//!` header.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Crates the pure domain must never depend on, even transitively.
const FORBIDDEN_IN_DOMAIN: &[&str] =
    &["tokio", "diesel", "libsqlite3-sys", "axum", "hyper", "reqwest", "mdns-sd", "local-ip-address"];

/// Workspace crates below the domain: generic code (no tillmesh model) that any layer
/// may use and that depends on no workspace crate.
const LEAF_CRATES: &[&str] = &["tillmesh-sha256-pair"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Leaf,
    Domain,
    Adapter,
    App,
    Binary,
    Tooling,
}

fn layer_of(name: &str, manifest: &str) -> Layer {
    if LEAF_CRATES.contains(&name) {
        Layer::Leaf
    } else if name == "tillmesh-domain" {
        Layer::Domain
    } else if name == "tillmesh-app" {
        Layer::App
    } else if manifest.contains("/apps/") {
        Layer::Binary
    } else if manifest.contains("/crates/") {
        Layer::Adapter
    } else {
        Layer::Tooling
    }
}

pub fn run(root: &Path) -> Result<()> {
    eprintln!("\n$ xtask tidy");
    let mut problems = Vec::new();
    check_layers(&mut problems)?;
    check_headers(root, &mut problems)?;
    if problems.is_empty() {
        eprintln!("tidy: architecture invariants and file headers hold");
        Ok(())
    } else {
        for p in &problems {
            eprintln!("tidy: {p}");
        }
        bail!("tidy found {} problem(s)", problems.len())
    }
}

fn check_layers(problems: &mut Vec<String>) -> Result<()> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1"])
        .output()
        .context("cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: Value = serde_json::from_slice(&out.stdout)?;
    let members: BTreeSet<String> = meta["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let packages = meta["packages"].as_array().context("packages")?;
    let mut id_to_name = BTreeMap::new();
    let mut layers = BTreeMap::new();
    for p in packages {
        let (id, name) = (p["id"].as_str().unwrap_or_default(), p["name"].as_str().unwrap_or_default());
        id_to_name.insert(id.to_string(), name.to_string());
        if members.contains(id) {
            layers.insert(name.to_string(), layer_of(name, p["manifest_path"].as_str().unwrap_or_default()));
        }
    }
    // Direct workspace edges, normal and build dependencies only (tests may use fakes).
    for p in packages {
        let name = p["name"].as_str().unwrap_or_default();
        let Some(&from) = layers.get(name) else {
            continue;
        };
        for d in p["dependencies"].as_array().into_iter().flatten() {
            if d["kind"].as_str() == Some("dev") {
                continue;
            }
            let dep = d["name"].as_str().unwrap_or_default();
            let Some(&to) = layers.get(dep) else { continue };
            let ok = match from {
                Layer::Leaf => false,
                _ if to == Layer::Leaf => true,
                Layer::Domain => false,
                Layer::Adapter => to == Layer::Domain,
                Layer::App => matches!(to, Layer::Domain | Layer::Adapter),
                Layer::Binary => to == Layer::App,
                Layer::Tooling => true,
            };
            if !ok {
                problems.push(format!(
                    "Architecture Invariant broken: {name} ({from:?}) must not depend on {dep} ({to:?})"
                ));
            }
        }
    }
    // Transitive normal dependencies of the domain.
    let resolve = meta["resolve"]["nodes"].as_array().context("resolve")?;
    let nodes: BTreeMap<&str, &Value> = resolve.iter().filter_map(|n| Some((n["id"].as_str()?, n))).collect();
    let domain_id = id_to_name.iter().find(|(_, n)| *n == "tillmesh-domain").map(|(i, _)| i.clone());
    if let Some(domain_id) = domain_id {
        let mut stack = vec![domain_id];
        let mut seen = BTreeSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            let Some(node) = nodes.get(id.as_str()) else {
                continue;
            };
            for dep in node["deps"].as_array().into_iter().flatten() {
                let normal = dep["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null());
                if normal {
                    if let Some(pkg) = dep["pkg"].as_str() {
                        stack.push(pkg.to_string());
                    }
                }
            }
        }
        for id in &seen {
            let name = id_to_name.get(id).map(String::as_str).unwrap_or_default();
            if FORBIDDEN_IN_DOMAIN.contains(&name) {
                problems
                    .push(format!("Architecture Invariant broken: tillmesh-domain depends (transitively) on {name}"));
            }
        }
    } else {
        problems.push("tillmesh-domain is missing from the workspace".into());
    }
    Ok(())
}

fn check_headers(root: &Path, problems: &mut Vec<String>) -> Result<()> {
    for dir in ["crates", "apps", "tests", "xtask"] {
        walk(&root.join(dir), &mut |path| {
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
                if !first.starts_with("//!") {
                    problems.push(format!("{} does not start with a `//!` header saying what it owns", path.display()));
                }
            }
        });
    }
    Ok(())
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "target" || n == "fuzz") {
                continue;
            }
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

//! `terminal-server`: parses the configuration and runs one tillmesh terminal.
//! All behaviour lives in `tillmesh-app`.

fn main() -> std::process::ExitCode {
    tillmesh_app::main_entry()
}

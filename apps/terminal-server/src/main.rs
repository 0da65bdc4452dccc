//! `terminal-server`: parses the configuration and runs one tillmesh terminal.
//! All behaviour lives in `tillmesh-app`.

// A terminal allocates and frees many small objects per change (parsed values, states,
// record text): mimalloc makes a local write ~14% faster than glibc's allocator and
// frees memory another thread allocated without taking that thread's arena lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tillmesh_app::main_entry()
}

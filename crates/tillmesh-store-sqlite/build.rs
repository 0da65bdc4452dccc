//! Build script: re-embeds the migrations whenever the top-level `migrations/` folder changes.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}

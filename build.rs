//! Embeds sql/platform and supabase/migrations into the binary, so a deployed `stripe-worker`
//! migrates and checks readiness without the repository beside it.

use std::fmt::Write;
use std::path::Path;

fn embed(dir: &str, out: &mut String, name: &str) {
    println!("cargo:rerun-if-changed={dir}");
    // Read at run time: `env!` would be the checkout the build script was first compiled in,
    // which a target directory shared between checkouts reuses.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let root = Path::new(&manifest_dir).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "sql"));
    files.sort();
    writeln!(out, "pub static {name}: &[(&str, &str)] = &[").unwrap();
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let file = path.file_name().unwrap().to_string_lossy();
        writeln!(
            out,
            "    ({file:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    writeln!(out, "];").unwrap();
}

fn main() {
    let mut out = String::new();
    embed("sql/platform", &mut out, "PLATFORM");
    embed("supabase/migrations", &mut out, "MIGRATIONS");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("embedded_sql.rs");
    std::fs::write(dest, out).unwrap();
}

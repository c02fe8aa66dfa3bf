//! Generate include/walredo.h from the walredo crate's C ABI (src/ffi/) with
//! the pinned cbindgen.
//!
//!   cargo run -p walredo-header -- write   (what `make header` runs)
//!   cargo run -p walredo-header -- check   (fails when the file is stale)

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The walredo crate: the workspace's root package.
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let header = root.join("include/walredo.h");
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut builder = cbindgen::Builder::new().with_config(config);
    // Only the C ABI modules: the rest of the crate is not C's business.
    for source in walredo::ffi::HEADER_SOURCES {
        builder = builder.with_src(root.join(source));
    }
    let bindings = builder
        .generate()
        .expect("cbindgen could not generate the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);

    match std::env::args().nth(1).as_deref() {
        Some("write") => {
            std::fs::write(&header, &generated).expect("write include/walredo.h");
            println!("wrote {}", header.display());
            ExitCode::SUCCESS
        }
        Some("check") => {
            let current = std::fs::read(&header).unwrap_or_default();
            if current == generated {
                println!("{} is up to date", header.display());
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "{} is stale: it differs from what src/ffi/ generates; run `make header` and commit",
                    header.display()
                );
                ExitCode::FAILURE
            }
        }
        _ => {
            eprintln!("usage: walredo-header write|check");
            ExitCode::FAILURE
        }
    }
}

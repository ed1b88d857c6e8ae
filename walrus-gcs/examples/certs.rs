//! Certificate tooling for a Walrus cluster (moves into `walrus-node certs` later).
//!
//! ```text
//! cargo run -p walrus-gcs --example certs -- init DIR           # new cluster CA
//! cargo run -p walrus-gcs --example certs -- issue DIR NAME...  # node certificates
//! ```
//! `init` writes `DIR/ca.pem` and `DIR/ca.key` (it refuses to overwrite a CA); `issue`
//! writes `DIR/NAME.pem` and `DIR/NAME.key` with SAN = NAME (re-issuing rotates them).

use std::path::PathBuf;
use std::process::ExitCode;

use walrus_gcs::transport::certs;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [cmd, dir] if cmd == "init" => certs::write_new_ca(&PathBuf::from(dir)).map(|_| {
            println!("created {dir}/ca.pem and {dir}/ca.key (keep ca.key off the nodes)");
        }),
        [cmd, dir, names @ ..] if cmd == "issue" && !names.is_empty() => {
            names.iter().try_for_each(|name| {
                certs::write_node_cert(&PathBuf::from(dir), name)
                    .map(|_| println!("issued {dir}/{name}.pem and {dir}/{name}.key"))
            })
        }
        _ => {
            eprintln!("usage: certs init DIR | certs issue DIR NAME...");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certs: {e}");
            ExitCode::FAILURE
        }
    }
}

//! walrus-node: the one Walrus binary on every machine; the shared config names each
//! host's roles (controller, reporter, replicator, director).

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use walrus_node::config::Config;

/// Walrus: one web site served from clusters in several areas; every client sent to the
/// best replica through DNS.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file without starting anything.
    ///
    /// Example: walrus-node check-config --config /etc/walrus/walrus.toml
    ///
    /// Prints a summary of the deployment, or the first error with the file, line and
    /// field; exits 1 on error.
    CheckConfig {
        /// The deployment's configuration file.
        #[arg(long, default_value = "/etc/walrus/walrus.toml")]
        config: PathBuf,
    },
    /// Run the roles that the configuration gives this node.
    ///
    /// Example: walrus-node run --config /etc/walrus/walrus.toml --node eu-a
    Run {
        /// The deployment's configuration file.
        #[arg(long, default_value = "/etc/walrus/walrus.toml")]
        config: PathBuf,
        /// This host's node name, as in the file's [nodes.NAME].
        #[arg(long)]
        node: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walrus-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { config } => {
            let config = Config::load(&config)?;
            println!(
                "{}: valid — site {}, {} areas, {} clusters, {} servers, {} nodes",
                config.file.display(),
                config.site,
                config.areas.len(),
                config.clusters.len(),
                config
                    .clusters
                    .values()
                    .map(|c| c.servers.len())
                    .sum::<usize>(),
                config.nodes.len()
            );
            for (name, area) in &config.areas {
                println!(
                    "  area {name}: zone {}, name server {}, home cluster {}",
                    area.zone, area.name_server, area.home_cluster
                );
            }
            for (name, node) in &config.nodes {
                let roles: Vec<String> = node.roles.iter().map(|r| r.to_string()).collect();
                println!("  node {name}: {} [{}]", node.address, roles.join(", "));
            }
            Ok(())
        }
        Command::Run { config, node } => {
            let config = Config::load(&config)?;
            let node = config.node(&node).context("choosing this host's node")?;
            anyhow::bail!(
                "the actors are not wired into the node yet (roles requested: {:?})",
                node.roles
            )
        }
    }
}

//! walrus-node: the one Walrus binary on every machine; the shared config names each
//! host's roles (controller, reporter, replicator, director).

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};
use walrus_actors::model::AreaName;
use walrus_actors::reporter::bypass::{self, Bypass};
use walrus_node::config::Config;
use walrus_node::status::AdminRequest;

/// `println!` that ends the process quietly when stdout is closed (`walrus-node ... | head`),
/// as Unix tools do, instead of panicking with "Broken pipe".
macro_rules! out {
    ($($arg:tt)*) => { write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` with the same handling as [`out!`].
macro_rules! out_raw {
    ($($arg:tt)*) => { write_stdout(format_args!($($arg)*)) };
}

/// Writes to stdout; a closed stdout ends the process with success (the reader had what it
/// wanted), any other write error with a message and failure.
fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("walrus-node: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Walrus: one web site served from clusters in several areas; every client sent to the
/// best replica through DNS.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log as JSON lines instead of human-readable text (RUST_LOG sets the level; default
    /// info).
    #[arg(long, global = true)]
    log_json: bool,
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
    ///
    /// Starts the group-communication node with this node's certificate
    /// (<tls.dir>/<node>.pem and .key, CA tls.ca), then its roles. SIGTERM or Ctrl-C stops
    /// cleanly (roles leave their groups, peers are told). SIGHUP re-reads the file and
    /// applies it live: [timing] round_period and report_timeout, [controller], [notify],
    /// and web servers, clusters, areas and nodes added, removed or changed (new peers
    /// are dialled once every node in the group runs the file). A file that changes what
    /// needs a restart (this node's own entry, site, [tls], [dns], [http], [reporter],
    /// [replicator], ...) is refused as a whole with the reasons, and so is an invalid
    /// one: the running configuration is kept.
    Run {
        /// The deployment's configuration file.
        #[arg(long, default_value = "/etc/walrus/walrus.toml")]
        config: PathBuf,
        /// This host's node name, as in the file's [nodes.NAME].
        #[arg(long)]
        node: String,
        /// Run these roles instead of the file's (comma-separated), e.g.
        /// --roles controller,reporter.
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<walrus_node::config::Role>>,
    },
    /// Create the cluster CA and node certificates for the group's mutual TLS.
    ///
    /// Example: walrus-node certs init --dir /etc/walrus/certs
    ///          walrus-node certs issue --dir /etc/walrus/certs eu-a eu-b us-a
    ///
    /// Then copy ca.pem and NODE.pem/NODE.key to each node; keep ca.key off the nodes.
    /// Re-issuing a node's certificate rotates it.
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
    /// Take this host's web server out of rounds (BYPASS), or put it back.
    ///
    /// Example: walrus-node bypass on --config /etc/walrus/walrus.toml --for 30m --reason "kernel upgrade"
    ///          walrus-node bypass off --config /etc/walrus/walrus.toml
    ///
    /// Writes or removes the bypass file ([reporter] bypass_file, or --file); the Reporter
    /// reads it every interval. With --for the bypass ends by itself.
    Bypass {
        #[command(subcommand)]
        action: BypassAction,
    },
    /// DNS helpers.
    Dns {
        #[command(subcommand)]
        action: DnsAction,
    },
    /// Drain a web server for a while: it gets no clients (as with its own bypass), from
    /// any host with an admin certificate.
    ///
    /// Example: walrus-node drain --addr 10.0.1.1:9400 --server-name eu-a \
    ///            --certs ./certs --admin alice --server eu-1 --for 30m --reason "kernel"
    ///
    /// Sent over HTTPS with the admin's certificate to a Controller node's status_addr
    /// ([http] tls = "cluster", admins = ["alice"]); every Controller applies it, it shows
    /// in `walrus-node status` and every decision's reason, and ends by itself.
    Drain {
        #[command(flatten)]
        to: AdminTarget,
        /// The server, as in [clusters.C.servers.NAME].
        #[arg(long)]
        server: String,
        /// How long, e.g. 30m or 2h (at most a week).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Why (shown with it).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End a drain now.
    ///
    /// Example: walrus-node undrain --addr 10.0.1.1:9400 --server-name eu-a \
    ///            --certs ./certs --admin alice --server eu-1
    Undrain {
        #[command(flatten)]
        to: AdminTarget,
        /// The server.
        #[arg(long)]
        server: String,
    },
    /// Pin an area to a cluster for a while (a manual override of the assignment, used
    /// while the cluster has a working server).
    ///
    /// Example: walrus-node pin --addr 10.0.1.1:9400 --server-name eu-a \
    ///            --certs ./certs --admin alice --area eu --cluster c-us --for 1h
    Pin {
        #[command(flatten)]
        to: AdminTarget,
        /// The area.
        #[arg(long)]
        area: String,
        /// The cluster.
        #[arg(long)]
        cluster: String,
        /// How long, e.g. 1h (at most a week).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Why (shown with it).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End a pin now.
    ///
    /// Example: walrus-node unpin --addr 10.0.1.1:9400 --server-name eu-a \
    ///            --certs ./certs --admin alice --area eu
    Unpin {
        #[command(flatten)]
        to: AdminTarget,
        /// The area.
        #[arg(long)]
        area: String,
    },
    /// Print a node's status as a table: view and master, each area's cluster and answer,
    /// each server's state and load, the last decisions with their reasons.
    ///
    /// Example: walrus-node status --addr 127.0.1.1:9400
    ///          walrus-node status --addr 10.0.1.1:9400 --ca /etc/walrus/certs/ca.pem \
    ///            --server-name eu-a --token-file /etc/walrus/http-token
    ///
    /// Reads http://ADDR/status (the node's status_addr), or https:// with --ca when the
    /// node's [http] tls is on; the same address serves /metrics (Prometheus text) and /
    /// (a live dashboard for a browser: with a token, open /#token=TOKEN).
    Status {
        /// The node's status_addr.
        #[arg(long)]
        addr: std::net::SocketAddr,
        /// HTTPS, verifying the node's certificate with this CA file (the cluster's
        /// ca.pem for [http] tls = "cluster").
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The name in the node's certificate (its node name for tls = "cluster").
        /// Default: the address.
        #[arg(long, requires = "ca")]
        server_name: Option<String>,
        /// A file holding the node's bearer token ([http] token_file).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the raw JSON document instead of the table.
        #[arg(long)]
        json: bool,
        /// Instead of the table: how the node's name servers answer this resolver
        /// (learned steering's entry for its /24 or /48: RTT per area, sample count and
        /// age, the area it is steered to and why).
        #[arg(long)]
        resolver: Option<std::net::IpAddr>,
    },
    /// Run a whole Walrus deployment on loopback, with failures, and narrate it.
    ///
    /// Example: walrus-node demo --duration 60s
    ///          walrus-node demo --scenario failover --dashboard 127.0.0.1:8480
    ///
    /// Three areas with embedded name servers, three clusters of two built-in web servers,
    /// three Controllers, all in this process; nothing to install. Prints every move with
    /// its reason, the dashboard URL and dig commands to try. Scenarios: tour (default: a
    /// server dies, its cluster dies, a cluster overloads, the master is killed, all
    /// recovers), failover (no overload), quiet (only moving load).
    Demo {
        /// Stop after this long (30 = 30 seconds; or 30s, 2m); default: run until Ctrl-C.
        #[arg(long, value_parser = seconds_or_duration)]
        duration: Option<Duration>,
        /// The script: tour, failover or quiet.
        #[arg(long, default_value = "tour")]
        scenario: String,
        /// Where the dashboard listens (falls back to a free port if taken).
        #[arg(long, default_value = "127.0.0.1:8480")]
        dashboard: std::net::SocketAddr,
    },
}

/// Where an admin command goes and with which certificate.
#[derive(clap::Args)]
struct AdminTarget {
    /// A Controller node's status_addr.
    #[arg(long)]
    addr: std::net::SocketAddr,
    /// That node's name (its certificate's name).
    #[arg(long)]
    server_name: String,
    /// The directory with ca.pem and admin.NAME.pem / admin.NAME.key.
    #[arg(long)]
    certs: PathBuf,
    /// The admin's name (as in `certs issue --admin NAME`).
    #[arg(long)]
    admin: String,
}

#[derive(Subcommand)]
enum CertsAction {
    /// Create DIR/ca.pem and DIR/ca.key (refuses to overwrite an existing CA).
    ///
    /// Example: walrus-node certs init --dir /etc/walrus/certs
    Init {
        /// Where the CA goes.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue DIR/NAME.pem and DIR/NAME.key (SAN = NAME) with the CA in DIR.
    ///
    /// Example: walrus-node certs issue --dir /etc/walrus/certs eu-a eu-b
    ///          walrus-node certs issue --dir ./certs --admin alice
    ///
    /// With --admin, an admin's certificate instead: DIR/admin.NAME.pem and .key (SAN =
    /// admin.NAME), for `walrus-node drain`/`pin` against nodes whose [http] admins name
    /// NAME. It cannot join the group as a node, and a node's certificate cannot drain.
    ///
    /// With --client, a client node's (tier = "client" in the file): DIR/client.NAME.pem
    /// and .key (SAN = client.NAME). It attaches to members only as a client; a member's
    /// certificate cannot attach as a client, nor a client's join as a member.
    ///
    /// With --config FILE and no names: every node of the file, each with the kind its
    /// tier needs.
    Issue {
        /// The directory holding ca.key.
        #[arg(long)]
        dir: PathBuf,
        /// Admins' certificates rather than nodes'.
        #[arg(long, conflicts_with_all = ["client", "config"])]
        admin: bool,
        /// Client nodes' certificates (client.NAME) rather than members'.
        #[arg(long, conflicts_with = "config")]
        client: bool,
        /// Issue for every node of this configuration (members NAME, clients client.NAME).
        #[arg(long, conflicts_with = "names")]
        config: Option<PathBuf>,
        /// Node names, as in the configuration's [nodes.NAME] (or admin names).
        #[arg(required_unless_present = "config")]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum BypassAction {
    /// Leave this server out of rounds.
    ///
    /// Example: walrus-node bypass on --config /etc/walrus/walrus.toml --for 30m
    On {
        /// The configuration file (for [reporter] bypass_file).
        #[arg(long, default_value = "/etc/walrus/walrus.toml")]
        config: PathBuf,
        /// The bypass file itself, instead of the configuration's.
        #[arg(long)]
        file: Option<PathBuf>,
        /// How long (e.g. 30m, 2h); without it, until `bypass off`.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Why (shown in reports and on the status page).
        #[arg(long, default_value = "operator bypass")]
        reason: String,
    },
    /// Put this server back into rounds.
    ///
    /// Example: walrus-node bypass off --config /etc/walrus/walrus.toml
    Off {
        /// The configuration file (for [reporter] bypass_file).
        #[arg(long, default_value = "/etc/walrus/walrus.toml")]
        config: PathBuf,
        /// The bypass file itself, instead of the configuration's.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DnsAction {
    /// Print BIND 9 zone statements and starting zone files for one area (paper §7.2).
    ///
    /// Example: walrus-node dns bind-config --config /etc/walrus/walrus.toml --area eu \
    ///            --zone-dir /var/lib/bind/walrus
    ///
    /// The area's name server is authoritative for its own zone and the site zone, where
    /// www.<site> is a CNAME to www.<area zone>; the update-policy lets only the area's
    /// TSIG key change www.<area zone> A and AAAA, and the TXT of
    /// _walrus-epoch.<area zone> that fences writes by decision epoch. Create the key with
    /// `tsig-keygen -a hmac-sha256 NAME` and include it before the zone statements.
    BindConfig {
        /// The configuration file.
        #[arg(long, default_value = "/etc/walrus/walrus.toml")]
        config: PathBuf,
        /// The area, as in [areas.NAME].
        #[arg(long)]
        area: String,
        /// Where the zone files will live on the name server (writable by named).
        #[arg(long, default_value = "/var/lib/bind/walrus")]
        zone_dir: PathBuf,
        /// The TSIG key name; default: the name in the area's tsig_key_file, else
        /// walrus-<area>.
        #[arg(long)]
        key_name: Option<String>,
    },
    /// Print a whole knot.conf and starting zone files for one area on Knot DNS.
    ///
    /// Example: walrus-node dns knot-config --config /etc/walrus/walrus.toml --area eu \
    ///            --zone-dir /var/lib/knot/walrus > walrus-eu.txt
    ///
    /// Same zones and layout as bind-config. Knot listens on the area's name_server; its
    /// ACL lets only the area's TSIG key, from the area's Director and Controller hosts,
    /// update www.<area zone> and _walrus-epoch.<area zone>. The key's secret comes from
    /// the area's tsig_key_file (make it with `tsig-keygen -a hmac-sha256 NAME`); without
    /// it the output says what to do. The sections are separated by `// ---- FILE ----`.
    KnotConfig {
        /// The configuration file.
        #[arg(long, default_value = "/etc/walrus/walrus.toml")]
        config: PathBuf,
        /// The area, as in [areas.NAME].
        #[arg(long)]
        area: String,
        /// Where the zone files and Knot's database will live (writable by knotd).
        #[arg(long, default_value = "/var/lib/knot/walrus")]
        zone_dir: PathBuf,
        /// knotd's run directory (PID file, control socket).
        #[arg(long, default_value = "/run/knot")]
        run_dir: PathBuf,
        /// The TSIG key name; default: the name in the area's tsig_key_file, else
        /// walrus-<area>.
        #[arg(long)]
        key_name: Option<String>,
    },
    /// Print pdns.conf, a pdnsutil setup script and starting zone files for one area on
    /// PowerDNS Authoritative (gsqlite3 backend).
    ///
    /// Example: walrus-node dns pdns-config --config /etc/walrus/walrus.toml --area eu \
    ///            --zone-dir /var/lib/powerdns/walrus
    ///
    /// Same zones and layout as bind-config. The script loads both zones, imports the
    /// area's TSIG key (from its tsig_key_file; else PowerDNS generates one) and lets it
    /// update the area zone from the area's Director and Controller hosts. PowerDNS cannot
    /// narrow the key to www and _walrus-epoch as BIND and Knot do: it may change any name
    /// in the area zone. The sections are separated by `// ---- FILE ----`.
    PdnsConfig {
        /// The configuration file.
        #[arg(long, default_value = "/etc/walrus/walrus.toml")]
        config: PathBuf,
        /// The area, as in [areas.NAME].
        #[arg(long)]
        area: String,
        /// Where the zone files will be put before running the setup script.
        #[arg(long, default_value = "/var/lib/powerdns/walrus")]
        zone_dir: PathBuf,
        /// The gsqlite3 database (created with the backend's schema if missing).
        #[arg(long, default_value = "/var/lib/powerdns/pdns.sqlite3")]
        database: PathBuf,
        /// The TSIG key name; default: the name in the area's tsig_key_file, else
        /// walrus-<area>.
        #[arg(long)]
        key_name: Option<String>,
    },
    /// Serve one area's zones from the embedded name server alone, without joining the
    /// group: to try a layout through a real resolver before going live, or to keep an
    /// area answering with its stored answer while its node is down.
    ///
    /// Example: walrus-node dns serve --config /etc/walrus/walrus.toml --area eu
    ///
    /// Answers exactly as `run` does for the area (same zones, NS set, delegations and
    /// TTLs) with the stored answer (<dns.state_dir>/<area>.state) or, without one, the
    /// home cluster's servers. Nothing changes the answer. SIGTERM or Ctrl-C stops it.
    Serve {
        /// The configuration file.
        #[arg(long, default_value = "/etc/walrus/walrus.toml")]
        config: PathBuf,
        /// The area, as in [areas.NAME].
        #[arg(long)]
        area: String,
        /// Listen here instead of the area's name_server address.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo narrates on stdout; its nodes' logs stay quiet unless RUST_LOG asks.
    let default_level = if matches!(cli.command, Command::Demo { .. }) {
        "error"
    } else {
        "info"
    };
    init_logs(cli.log_json, default_level);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walrus-node: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: our errors often say their
/// cause in their own message already ("socket 127.0.0.1:7400: Address in use"), and
/// printing the chain again repeated it up to four times.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

fn init_logs(json: bool, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::CheckConfig { config } => check_config(config),
        Command::Run {
            config,
            node,
            roles,
        } => {
            // The role actors run on actix over a multi-thread tokio runtime: walrus-gcs,
            // quinn and the HTTP side keep their tokio tasks on its worker threads.
            actix::System::with_tokio_rt(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| {
                        eprintln!("walrus-node: cannot start the tokio runtime: {e}");
                        std::process::exit(1)
                    })
            })
            .block_on(run_node(config, node, roles))
        }
        Command::Certs { action } => certs(action),
        Command::Bypass { action } => bypass_cmd(action),
        Command::Drain {
            to,
            server,
            duration,
            reason,
        } => admin_cmd(
            &to,
            AdminRequest {
                action: "drain".into(),
                server: Some(server),
                for_secs: Some(duration.as_secs().max(1)),
                reason,
                ..AdminRequest::default()
            },
        ),
        Command::Undrain { to, server } => admin_cmd(
            &to,
            AdminRequest {
                action: "undrain".into(),
                server: Some(server),
                ..AdminRequest::default()
            },
        ),
        Command::Pin {
            to,
            area,
            cluster,
            duration,
            reason,
        } => admin_cmd(
            &to,
            AdminRequest {
                action: "pin".into(),
                area: Some(area),
                cluster: Some(cluster),
                for_secs: Some(duration.as_secs().max(1)),
                reason,
                ..AdminRequest::default()
            },
        ),
        Command::Unpin { to, area } => admin_cmd(
            &to,
            AdminRequest {
                action: "unpin".into(),
                area: Some(area),
                ..AdminRequest::default()
            },
        ),
        Command::Dns {
            action:
                DnsAction::BindConfig {
                    config,
                    area,
                    zone_dir,
                    key_name,
                },
        } => bind_config(config, area, zone_dir, key_name),
        Command::Dns {
            action:
                DnsAction::KnotConfig {
                    config,
                    area,
                    zone_dir,
                    run_dir,
                    key_name,
                },
        } => server_config(config, area, zone_dir, key_name, |setup| {
            Ok(walrus_actors::director::knot_config::knot_config(setup, &run_dir)?.render())
        }),
        Command::Dns {
            action:
                DnsAction::PdnsConfig {
                    config,
                    area,
                    zone_dir,
                    database,
                    key_name,
                },
        } => server_config(config, area, zone_dir, key_name, |setup| {
            Ok(walrus_actors::director::pdns_config::pdns_config(setup, &database)?.render())
        }),
        Command::Dns {
            action:
                DnsAction::Serve {
                    config,
                    area,
                    listen,
                },
        } => tokio_runtime()?.block_on(dns_serve(config, area, listen)),
        Command::Status {
            addr,
            json,
            ca,
            server_name,
            token_file,
            resolver,
        } => tokio_runtime()?.block_on(async {
            let options = walrus_node::status::FetchOptions {
                https_ca: ca,
                server_name,
                token: match token_file {
                    Some(f) => Some(walrus_node::http_access::read_token(&f)?),
                    None => None,
                },
            };
            if let Some(resolver) = resolver {
                let doc = walrus_node::status::fetch_resolver(addr, resolver, &options).await?;
                if json {
                    out!("{}", serde_json::to_string_pretty(&doc)?);
                } else {
                    out_raw!("{}", walrus_node::status::render_resolver(&doc));
                }
                return Ok(());
            }
            let doc = walrus_node::status::fetch_with(addr, &options).await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                out_raw!("{}", walrus_node::status::render_table(&doc));
            }
            Ok(())
        }),
        Command::Demo {
            duration,
            scenario,
            dashboard,
        } => {
            let scenario = scenario.parse()?;
            let opts = walrus_node::demo::DemoOptions {
                duration,
                scenario,
                dashboard,
            };
            tokio_runtime()?.block_on(async {
                let interrupt = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                walrus_node::demo::run(opts, std::io::stdout(), interrupt).await?;
                Ok(())
            })
        }
    }
}

/// "30" is 30 seconds; "500ms", "2m" are humantime durations.
fn seconds_or_duration(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(s).map_err(|e| e.to_string()),
    }
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn check_config(config: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&config)?;
    out!(
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
        out!(
            "  area {name}: zone {}, name server {}, home cluster {}",
            area.zone,
            area.name_server,
            area.home_cluster
        );
    }
    for (name, node) in &config.nodes {
        let roles: Vec<String> = node.roles.iter().map(|r| r.to_string()).collect();
        let tier = match (node.is_member(), node.client_addr()) {
            (true, Some(at)) => format!("member, serves clients on {at}"),
            (true, None) => "member".to_owned(),
            (false, _) => format!("client of {}", node.attach.join(", then ")),
        };
        out!(
            "  node {name}: {} [{}] {tier}",
            node.address,
            roles.join(", ")
        );
    }
    for w in config.warnings() {
        out!("warning: {w}");
    }
    Ok(())
}

async fn run_node(
    path: PathBuf,
    node: String,
    roles: Option<Vec<walrus_node::config::Role>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let me = node.clone();
    let load = move |path: &PathBuf| -> anyhow::Result<Config> {
        let config = Config::load(path)?;
        Ok(match &roles {
            Some(r) => config.with_roles(&me, r)?,
            None => config,
        })
    };
    let config = load(&path)?;
    for w in config.warnings() {
        tracing::warn!(config = %path.display(), "{w}");
    }
    let term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // The HTTP side's token and certificate, read before joining the group: a missing file
    // stops the start with its name, not a node that runs half-configured.
    let access = walrus_node::http_access::HttpAccess::from_config(&config, &node)?;
    let started = NodeStart {
        path,
        node,
        config,
        access,
        load: &load,
        term,
        hup,
    };
    if started.config.node(&started.node)?.is_member() {
        let runtime = walrus_node::runtime::start(&started.config, &started.node).await?;
        let sources = walrus_node::status::NodeSources::of(&runtime);
        serve_node(started, runtime, sources).await
    } else {
        let runtime = walrus_node::runtime::start_client(&started.config, &started.node).await?;
        let sources = walrus_node::status::NodeSources::of_client(&runtime);
        serve_node(started, runtime, sources).await
    }
}

/// What `run` has read and set up before its node starts.
struct NodeStart<'a> {
    path: PathBuf,
    node: String,
    config: Config,
    access: walrus_node::http_access::HttpAccess,
    load: &'a (dyn Fn(&PathBuf) -> anyhow::Result<Config> + Sync),
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// Runs a started node (member or client) until a signal, a fatal layer or a role that
/// keeps failing: its status side, reloads on SIGHUP, then a clean stop.
async fn serve_node<L: walrus_node::runtime::NodeLayer>(
    started: NodeStart<'_>,
    mut runtime: walrus_node::runtime::NodeRuntime<L>,
    sources: walrus_node::status::NodeSources,
) -> anyhow::Result<()> {
    let NodeStart {
        path,
        node,
        config,
        access,
        load,
        mut term,
        mut hup,
    } = started;
    tracing::info!(node = %node, config = %path.display(), "walrus-node running");
    let status = match config.node(&node)?.status_addr {
        Some(addr) => {
            let observer = std::sync::Arc::new(std::sync::Mutex::new(
                walrus_node::status::Observer::new(&node, &config),
            ));
            let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
            let sampler = tokio::spawn(walrus_node::status::sample_loop(
                sources,
                observer.clone(),
                async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                },
            ));
            let scheme = access.scheme();
            match walrus_node::status::StatusServer::start_with(
                addr,
                observer,
                access,
                runtime.controller().cloned(),
            ) {
                Ok(server) => {
                    tracing::info!(%addr, "status page, metrics and dashboard on {scheme}://{addr}/");
                    Some((server, sampler, stop_tx))
                }
                Err(e) => {
                    let _ = stop_tx.send(true);
                    runtime.stop().await;
                    return Err(e.into());
                }
            }
        }
        None => None,
    };
    // Set when the group layer stopped on its own (this process is a duplicate of its node).
    let mut fatal: Option<String> = None;
    let failed = runtime.failed();
    tokio::pin!(failed);
    loop {
        tokio::select! {
            e = runtime.layer().fatal() => {
                // The roles cannot work without the group: no restarts from now on.
                runtime.supervision().close();
                tracing::error!(error = %e, "the group layer stopped: exiting");
                fatal = Some(e);
                break;
            }
            e = &mut failed => {
                tracing::error!(error = %e, "a role kept failing: exiting");
                fatal = Some(e);
                break;
            }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: stopping"); break; }
            _ = hup.recv() => match load(&path) {
                Ok(new) => match runtime.reload(&new).await {
                    Ok(r) => tracing::info!(applied = ?r.applied, "SIGHUP: configuration reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reload refused; keeping the running configuration"),
                },
                Err(e) => tracing::error!(error = %e, "SIGHUP: invalid file refused; keeping the running configuration"),
            },
        }
    }
    if let Some((server, sampler, stop)) = status {
        let _ = stop.send(true);
        let _ = sampler.await;
        server.stop().await;
    }
    runtime.stop().await;
    match fatal {
        Some(e) => Err(anyhow::anyhow!("node {node}: {e}")),
        None => Ok(()),
    }
}

fn certs(action: CertsAction) -> anyhow::Result<()> {
    use walrus_gcs::transport::certs;
    match action {
        CertsAction::Init { dir } => {
            certs::write_new_ca(&dir)?;
            out!(
                "created {0}/ca.pem and {0}/ca.key (give ca.pem to every node; keep ca.key off the nodes)",
                dir.display()
            );
        }
        CertsAction::Issue {
            dir,
            admin,
            client,
            config,
            names,
        } => {
            use walrus_node::config::{gcs_name, Tier, ADMIN_PREFIX, CLIENT_PREFIX};
            let names: Vec<String> = match config {
                Some(path) => Config::load(&path)?
                    .nodes
                    .iter()
                    .map(|(name, n)| gcs_name(name, n.tier))
                    .collect(),
                None => names
                    .into_iter()
                    .map(|name| {
                        for (prefix, flag) in
                            [(ADMIN_PREFIX, "--admin"), (CLIENT_PREFIX, "--client")]
                        {
                            if name.starts_with(prefix) {
                                anyhow::bail!(
                                    "`{name}`: give the node's name; {flag} adds `{prefix}`"
                                );
                            }
                        }
                        Ok(if admin {
                            format!("{ADMIN_PREFIX}{name}")
                        } else if client {
                            gcs_name(&name, Tier::Client)
                        } else {
                            name
                        })
                    })
                    .collect::<anyhow::Result<_>>()?,
            };
            for name in names {
                certs::write_node_cert(&dir, &name)?;
                out!("issued {0}/{name}.pem and {0}/{name}.key", dir.display());
            }
        }
    }
    Ok(())
}

/// Sends an admin's drain/pin request to a node's HTTP side with the admin's certificate.
fn admin_cmd(to: &AdminTarget, req: AdminRequest) -> anyhow::Result<()> {
    use walrus_actors::reporter::http::{Page, TlsOptions};
    let name = format!("{}{}", walrus_node::config::ADMIN_PREFIX, to.admin);
    let tls = TlsOptions {
        ca_file: Some(to.certs.join("ca.pem")),
        server_name: Some(to.server_name.clone()),
        client_cert: Some((
            to.certs.join(format!("{name}.pem")),
            to.certs.join(format!("{name}.key")),
        )),
    };
    let url = format!("https://{}/admin/override", to.addr);
    let body = serde_json::to_vec(&req)?;
    tokio_runtime()?.block_on(async {
        let page = Page::new(&url, std::time::Duration::from_secs(10), &tls)?
            .with_header("Content-Type", "application/json")?;
        let code = page.post(&body).await?;
        match code {
            200 => {
                out!("{} accepted by {}: every Controller applies it; see `walrus-node status`", req.action, to.server_name);
                Ok(())
            }
            403 => anyhow::bail!("{url}: refused (403): the node does not take {name} as an admin (its [http] admins, or this is not an admin certificate)"),
            400 => anyhow::bail!("{url}: refused (400): unknown server, area or cluster, or a bad duration; see the node's log"),
            409 => anyhow::bail!("{url}: {} runs no Controller: send it to a Controller node", to.server_name),
            other => anyhow::bail!("{url}: HTTP {other}"),
        }
    })
}

fn bypass_file(config: &std::path::Path, file: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match file {
        Some(f) => Ok(f),
        None => Ok(Config::load(config)?.reporter.bypass_file),
    }
}

fn bypass_cmd(action: BypassAction) -> anyhow::Result<()> {
    match action {
        BypassAction::On {
            config,
            file,
            duration,
            reason,
        } => {
            let path = bypass_file(&config, file)?;
            let b = Bypass::new(reason, duration, SystemTime::now());
            bypass::write_bypass(&path, &b)?;
            match duration {
                Some(d) => out!(
                    "bypass on for {} ({})",
                    humantime::format_duration(d),
                    path.display()
                ),
                None => out!("bypass on until `bypass off` ({})", path.display()),
            }
        }
        BypassAction::Off { config, file } => {
            let path = bypass_file(&config, file)?;
            if bypass::clear_bypass(&path)? {
                out!("bypass off ({})", path.display());
            } else {
                out!("bypass was not on ({})", path.display());
            }
        }
    }
    Ok(())
}

/// The area named on the command line, or an error listing the known ones.
fn area_of<'a>(
    config: &'a Config,
    area: &AreaName,
) -> anyhow::Result<&'a walrus_node::config::Area> {
    config.areas.get(area).with_context(|| {
        let known: Vec<&str> = config.areas.keys().map(|a| a.0.as_str()).collect();
        format!("there is no area `{area}`; known: {}", known.join(", "))
    })
}

async fn dns_serve(
    config: PathBuf,
    area: String,
    listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    use walrus_actors::director::embedded::EmbeddedServer;
    let config = Config::load(&config)?;
    let area = AreaName(area);
    let listen = listen.unwrap_or(area_of(&config, &area)?.name_server);
    let server = EmbeddedServer::open_or(
        area.clone(),
        walrus_node::runtime::zone_layout(&config, &area)?,
        walrus_node::runtime::state_file(&config, &area),
        walrus_node::runtime::initial_answer(&config, &area),
    )?;
    server.set_steering(walrus_node::runtime::steering(&config).context("dns.steering")?);
    let listening = server.bind(listen).await?;
    tracing::info!(%area, addr = %listening.local_addr(), answer = ?server.state().www, "embedded name server listening (dns serve: the answer does not change)");
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    listening
        .run(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
            }
        })
        .await;
    Ok(())
}

fn bind_config(
    config: PathBuf,
    area: String,
    zone_dir: PathBuf,
    key_name: Option<String>,
) -> anyhow::Result<()> {
    let config = Config::load(&config)?;
    let area = AreaName(area);
    let (key_name, _) = area_key(&config, &area, key_name)?;
    let layout = walrus_node::runtime::zone_layout(&config, &area)?;
    let initial = walrus_node::runtime::initial_answer(&config, &area);
    let out =
        walrus_actors::director::bind_config::bind_config(&layout, &key_name, &zone_dir, &initial)?;
    out_raw!("{}", out.render());
    Ok(())
}

/// The area's TSIG key name (`key_name`, else the one in its tsig_key_file, else
/// walrus-<area>) and the key itself when its file can be read.
fn area_key(
    config: &Config,
    area: &AreaName,
    key_name: Option<String>,
) -> anyhow::Result<(String, Option<walrus_actors::director::rfc2136::TsigKey>)> {
    use walrus_actors::director::rfc2136::TsigKey;
    let a = area_of(config, area)?;
    let key = match &a.tsig_key_file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading TSIG key file {}", f.display()))?;
            Some(
                TsigKey::from_bind_key(&text)
                    .with_context(|| format!("TSIG key file {}", f.display()))?,
            )
        }
        None => None,
    };
    let name = match (key_name, &key) {
        (Some(k), _) => k,
        (None, Some(k)) => k.name.to_ascii().trim_end_matches('.').to_owned(),
        (None, None) => format!("walrus-{area}"),
    };
    // A key file for another name than the one asked for is not this key.
    let key = key.filter(|k| k.name.to_ascii().trim_end_matches('.') == name);
    Ok((name, key))
}

/// The hosts that write the area's answer: its Directors, and the Controllers (the
/// master writes as a fallback when no Director of the area is left).
fn area_writers(config: &Config, area: &AreaName) -> Vec<std::net::IpAddr> {
    use walrus_node::config::Role;
    let mut hosts: Vec<std::net::IpAddr> = config
        .nodes
        .values()
        .filter(|n| {
            n.roles.contains(&Role::Controller)
                || (n.roles.contains(&Role::Director) && n.area.as_ref() == Some(area))
        })
        .map(|n| n.address.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// `dns knot-config` and `dns pdns-config`: the area's setup, rendered by `render`.
fn server_config(
    config: PathBuf,
    area: String,
    zone_dir: PathBuf,
    key_name: Option<String>,
    render: impl FnOnce(
        &walrus_actors::director::knot_config::UpdateSetup<'_>,
    ) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let config = Config::load(&config)?;
    let area = AreaName(area);
    let (key_name, key) = area_key(&config, &area, key_name)?;
    let layout = walrus_node::runtime::zone_layout(&config, &area)?;
    let initial = walrus_node::runtime::initial_answer(&config, &area);
    let writers = area_writers(&config, &area);
    let setup = walrus_actors::director::knot_config::UpdateSetup {
        layout: &layout,
        key_name: &key_name,
        key: key.as_ref(),
        listen: area_of(&config, &area)?.name_server,
        zone_dir: &zone_dir,
        update_from: &writers,
        initial: &initial,
    };
    out_raw!("{}", render(&setup)?);
    Ok(())
}

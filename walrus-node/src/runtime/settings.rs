//! Config → each role's settings: pure functions from the validated [`Config`] to the
//! types each role's `start` takes (unit-tested in `tests.rs`).

use super::*;

/// The Controller's round configuration: timings from `[timing]`, the assignment's
/// parameters from `[controller]` (others keep their documented defaults), the dead-server
/// notification delay from `[notify]`.
pub fn round_config(config: &Config) -> RoundConfig {
    controller_settings(config).round
}

/// Everything a Controller runs with: the round's timings from `[timing]`, the
/// assignment's knobs from `[controller]`, the notification channels and the dead-server
/// delay from `[notify]` (each section applied by its walrus-actors knobs type).
pub fn controller_settings(config: &Config) -> ControllerSettings {
    let mut round = RoundConfig {
        round_period: config.timing.round_period,
        report_timeout: config.timing.report_timeout,
        fast_failover: config.timing.fast_failover,
        ..RoundConfig::default()
    };
    config.controller.apply(&mut round);
    let mut notify = NotifyConfig {
        site: config.site.clone(),
        ..NotifyConfig::default()
    };
    config.notify.apply(&mut notify, &mut round);
    ControllerSettings {
        round,
        topology: config.topology(),
        notify,
        replication_primary: config.replicator.as_ref().map(|r| r.primary.clone()),
    }
}

/// The Reporter of node `node`: its server's status page, the reporting interval, the
/// bypass file.
pub fn reporter_config(config: &Config, node: &str) -> Result<ReporterConfig, RunError> {
    let n = config.node(node)?;
    let server_name = n.server.clone().ok_or_else(|| RunError::Role {
        node: node.to_owned(),
        detail: "the reporter role needs `server`".into(),
    })?;
    let server = config
        .clusters
        .values()
        .find_map(|c| c.servers.get(&server_name))
        .ok_or_else(|| RunError::Role {
            node: node.to_owned(),
            detail: format!("server {server_name} is in no cluster"),
        })?;
    let url = server.status.url.clone();
    let max = server.status.max_workers;
    let web = match server.status.kind {
        StatusKind::Nginx => WebSource::Nginx {
            url,
            max_workers: max,
        },
        StatusKind::Apache => WebSource::Apache {
            url,
            max_workers: None,
        },
        StatusKind::Probe => WebSource::Probe {
            url,
            expect_status: None,
            body_contains: None,
            max_workers: max,
        },
    };
    let mut rc = ReporterConfig::new(server_name, web);
    rc.interval = config.timing.report_interval;
    config.reporter.apply(&mut rc);
    if !config.timing.fast_failover {
        rc.fast_failover = None;
    }
    Ok(rc)
}

/// The Replicator of node `node`: primary or replica, its directory (the node's
/// `replicator_root` or `[replicator] root`), `keep` old generations beside the current
/// one. The primary keeps its generation numbering in `<root>.walrus-state`. With the
/// rsync method the primary pushes to every replica's `rsync_url`.
pub fn replicator_settings(config: &Config, node: &str) -> Result<ReplicatorSettings, RunError> {
    let n = config.node(node)?;
    let role_err = |detail: String| RunError::Role {
        node: node.to_owned(),
        detail,
    };
    let r = config
        .replicator
        .as_ref()
        .ok_or_else(|| role_err("the replicator role needs a [replicator] section".into()))?;
    let method = match r.method {
        ReplicationMethod::Walrus => TransferMethod::Walrus,
        ReplicationMethod::Rsync => TransferMethod::Rsync {
            program: PathBuf::from("rsync"),
            replicas: config
                .nodes
                .iter()
                .filter(|(name, n)| {
                    name.as_str() != r.primary.as_str() && n.roles.contains(&Role::Replicator)
                })
                .filter_map(|(name, n)| Some((NodeId::new(name.as_str()), n.rsync_url.clone()?)))
                .collect(),
        },
    };
    let root = r.root_of(n.replicator_root.as_deref());
    let role = if r.primary.as_str() == node {
        let mut state = root.clone().into_os_string();
        state.push(".walrus-state");
        ReplicatorRole::Primary {
            root,
            state_dir: PathBuf::from(state),
            watch: WatchConfig::default(),
        }
    } else {
        ReplicatorRole::Replica {
            store: root,
            config: r.store_config(),
        }
    };
    Ok(ReplicatorSettings {
        me: NodeId::new(node),
        primary: r.primary.clone(),
        role,
        backoff: BackoffConfig::default(),
        method,
    })
}

/// Area `area` of the file.
fn area_of<'c>(config: &'c Config, area: &AreaName) -> Result<&'c Area, RunError> {
    config
        .areas
        .get(area)
        .ok_or_else(|| director_error(area, "not an area of the configuration"))
}

pub(super) fn director_error(area: &AreaName, e: impl std::fmt::Display) -> RunError {
    RunError::Director {
        area: area.clone(),
        detail: e.to_string(),
    }
}

/// How long resolvers may keep NS records and name-server addresses. Only the www
/// answer needs a low TTL; NS records served with it made BIND's resolver fail with
/// "loop detected" within seconds (found by the steering lab, `docs/lab/`).
pub(super) const NS_TTL: Duration = Duration::from_secs(3600);

/// The §7.2 zone layout of `area`: the site zone, the area zone, the name server
/// `ns.<area zone>` at the area's `name_server` address, the configured TTL for the www
/// answer, [`NS_TTL`] for NS records, and every other area (its zone, `ns.<zone>` and its
/// `ns_addresses`): the site zone lists every area's name server and delegates every area
/// zone inside it.
pub fn zone_layout(config: &Config, area: &AreaName) -> Result<ZoneLayout, RunError> {
    let a = area_of(config, area)?;
    let ttl = RecordTtl::try_from(config.dns.ttl).map_err(|e| director_error(area, e))?;
    let ns_ttl = RecordTtl::try_from(NS_TTL).map_err(|e| director_error(area, e))?;
    let others = config
        .areas
        .iter()
        .filter(|(name, _)| *name != area)
        .map(|(name, other)| {
            AreaServer::new(&other.zone, None, other.ns_addresses.clone())
                .map_err(|e| director_error(name, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    ZoneLayout::new(&config.site, &a.zone, None, a.ns_addresses.clone(), ttl)
        .map(|layout| layout.with_ns_ttl(ns_ttl).with_other_areas(others))
        .map_err(|e| director_error(area, e))
}

/// The embedded name servers' source steering from `[[dns.steering]]`: each rule's
/// source prefix mapped to its area's zone (empty: the paper's §7.2 answer).
pub fn steering(config: &Config) -> Result<Steering, walrus_actors::director::DirectorError> {
    let pairs: Vec<(String, String)> = config
        .dns
        .steering
        .iter()
        .filter_map(|r| {
            config
                .areas
                .get(&r.area)
                .map(|a| (r.source.clone(), a.zone.clone()))
        })
        .collect();
    Steering::from_pairs(pairs.iter().map(|(s, z)| (s.as_str(), z.as_str())))
}

/// What an area's embedded server answers before its first decision (no state file yet):
/// its home cluster's addresses, at most `max_records`.
pub fn initial_answer(config: &Config, area: &AreaName) -> WwwRecords {
    let ttl = RecordTtl::try_from(config.dns.ttl).unwrap_or_default();
    let addrs = config
        .areas
        .get(area)
        .and_then(|a| config.clusters.get(&a.home_cluster))
        .map(|c| {
            c.servers
                .values()
                .flat_map(|s| s.addresses.iter().copied())
                .take(config.controller.max_records)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    WwwRecords::from_addrs(addrs, ttl)
}

/// The embedded server's state file of `area`.
pub fn state_file(config: &Config, area: &AreaName) -> PathBuf {
    config.dns.state_dir.join(format!("{area}.state"))
}

/// The RFC 2136 updater's settings of `area` (its name server, zone and TSIG key, read
/// from the area's `tsig_key_file`).
pub fn rfc2136_config(config: &Config, area: &AreaName) -> Result<Rfc2136Config, RunError> {
    let a = area_of(config, area)?;
    let path = a.tsig_key_file.as_ref().ok_or_else(|| RunError::Director {
        area: area.clone(),
        detail: "the rfc2136 backend needs tsig_key_file".into(),
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| director_error(area, format!("TSIG key file {}: {e}", path.display())))?;
    let key = TsigKey::from_bind_key(&text)
        .map_err(|e| director_error(area, format!("TSIG key file {}: {e}", path.display())))?;
    let area_zone = fqdn(&a.zone).map_err(|e| director_error(area, e))?;
    Ok(Rfc2136Config {
        area: area.clone(),
        server: a.name_server,
        area_zone,
        key,
        timeout: Duration::from_secs(2),
    })
}

/// The Director of `area`: the `[dns]` backend's name server (the embedded server on the
/// area's `name_server` address with its zone layout, state file, first answer and
/// steering; or the area's RFC 2136 server and key), the `[dns]` TTL, and the Director's
/// own defaults for when to apply and retry.
pub fn director_settings(config: &Config, area: &AreaName) -> Result<DirectorSettings, RunError> {
    let a = area_of(config, area)?;
    let ttl = RecordTtl::try_from(config.dns.ttl).map_err(|e| director_error(area, e))?;
    let name_server = match config.dns.backend {
        DnsBackend::Embedded => NameServerSettings::Embedded(EmbeddedSettings {
            layout: zone_layout(config, area)?,
            state_file: state_file(config, area),
            initial: initial_answer(config, area),
            steering: steering(config)
                .map_err(|e| director_error(area, format!("dns.steering: {e}")))?,
            listen: a.name_server,
        }),
        DnsBackend::Rfc2136 => NameServerSettings::Rfc2136(rfc2136_config(config, area)?),
    };
    Ok(DirectorSettings {
        area: area.clone(),
        ttl,
        name_server,
        timing: ApplyTiming::default(),
        retry: RetryPolicy::default(),
        learned: match &config.dns.learned {
            Some(l) if config.dns.backend == DnsBackend::Embedded => {
                Some((l.clone(), area_zones(config, area)?))
            }
            _ => None,
        },
    })
}

/// Every area's zone, by area: what a learned steering answer points at.
pub fn area_zones(
    config: &Config,
    area: &AreaName,
) -> Result<walrus_actors::director::learned::AreaZones, RunError> {
    config
        .areas
        .iter()
        .map(|(n, a)| {
            Ok((
                n.clone(),
                fqdn(&a.zone).map_err(|e| director_error(area, e))?,
            ))
        })
        .collect()
}

/// The nodes configured as `area`'s Directors (its writer election's candidates).
pub fn director_nodes(config: &Config, area: &AreaName) -> BTreeSet<NodeId> {
    config
        .nodes
        .iter()
        .filter(|(_, n)| n.roles.contains(&Role::Director) && n.area.as_ref() == Some(area))
        .map(|(name, _)| NodeId::new(name.as_str()))
        .collect()
}

/// The walrus-gcs configuration of `node`: its address, every other node as a peer, its
/// certificate `<tls.dir>/<node>.pem` and key `<tls.dir>/<node>.key`, the CA `tls.ca`, and
/// the LAN or WAN timeouts.
pub fn gcs_config(config: &Config, node: &str) -> Result<GcsConfig, RunError> {
    let n = config.node(node)?;
    if !n.is_member() {
        return Err(RunError::Role {
            node: node.to_owned(),
            detail: "a client node attaches to a member (client_link_config), it runs no \
                     group member"
                .into(),
        });
    }
    let transport = TransportConfig {
        me: NodeId::new(node),
        listen: Listen::Addr(n.address),
        peers: peer_addresses(config, node),
        identity: node_identity(config, node)?,
        limits: Limits::default(),
    };
    // The profile sets the transport's limits and the core's timeouts together.
    Ok(match config.timing.gcs_profile {
        GcsProfile::Lan => GcsConfig::lan(transport),
        GcsProfile::Wan => GcsConfig::wan(transport),
    })
}

/// How client node `node` attaches: its `client.<node>` certificate, the client
/// listeners of the members of its `attach` list, in order, sending from its `address`.
pub fn client_link_config(config: &Config, node: &str) -> Result<ClientLinkConfig, RunError> {
    let n = config.node(node)?;
    let members = n
        .attach
        .iter()
        .filter_map(|m| {
            let addr = config.nodes.get(m)?.client_addr()?;
            Some((NodeId::new(m.as_str()), addr))
        })
        .collect();
    Ok(ClientLinkConfig {
        identity: node_identity(config, node)?,
        name: NodeId::new(gcs_name(node, n.tier)),
        incarnation: None,
        members,
        // From the host's declared address: members' firewalls, logs and partitions by
        // address see the host the file names.
        local: Some(n.address.ip()),
        window: CLIENT_WINDOW,
        retry: match config.timing.gcs_profile {
            GcsProfile::Lan => Duration::from_millis(200),
            GcsProfile::Wan => Duration::from_secs(1),
        },
        limits: match config.timing.gcs_profile {
            GcsProfile::Lan => Limits::lan(),
            GcsProfile::Wan => Limits::wan(),
        },
        thread: walrus_gcs::GcsThread::Own,
    })
}

/// Multicasts a client node may have sent and not yet had confirmed (its Reporter's
/// reports and urgent reports, its replica's notes): far more than a round's worth.
pub const CLIENT_WINDOW: usize = 64;

/// Node `node`'s certificate and key (`<tls.dir>/<name>.pem`, `.key`, where the name is
/// `client.<node>` for a client, see [`gcs_name`]) and the CA.
pub(super) fn node_identity(config: &Config, node: &str) -> Result<NodeIdentity, RunError> {
    let certs_err = |source| RunError::Certs {
        node: node.to_owned(),
        source,
    };
    let name = gcs_name(node, config.node(node)?.tier);
    Ok(NodeIdentity {
        ca: certs::read_cert(&config.tls.ca).map_err(certs_err)?,
        cert: certs::read_cert(&config.tls.dir.join(format!("{name}.pem"))).map_err(certs_err)?,
        key: certs::read_key(&config.tls.dir.join(format!("{name}.key"))).map_err(certs_err)?,
    })
}

/// Every member but `node`, with its address: the group layer's peers (clients are not
/// dialed; they attach).
pub(super) fn peer_addresses(config: &Config, node: &str) -> Vec<(NodeId, SocketAddr)> {
    config
        .nodes
        .iter()
        .filter(|(name, p)| name.as_str() != node && p.is_member())
        .map(|(name, p)| (NodeId::new(name.as_str()), p.address))
        .collect()
}

/// Every node but `node`, by the name its certificate has ([`gcs_name`]), with its
/// address: who may open or accept TLS/TCP transfer streams (a client replica pulls
/// from the primary with its `client.` certificate).
fn bulk_peers(config: &Config, node: &str) -> Vec<(NodeId, SocketAddr)> {
    config
        .nodes
        .iter()
        .filter(|(name, _)| name.as_str() != node)
        .map(|(name, p)| (NodeId::new(gcs_name(name, p.tier)), p.address))
        .collect()
}

/// The Replicator's point-to-point streams: the group layer's QUIC streams, or with
/// `[replicator] transport = "tls-tcp"` TLS over TCP on the node's address (same port
/// number) with the same certificates.
pub(super) async fn replicator_streams(
    config: &Config,
    node: &str,
    layer: Option<Arc<dyn PeerStreams>>,
) -> Result<Arc<dyn PeerStreams>, RunError> {
    let tls_tcp = config.replicator.as_ref().is_some_and(|r| {
        r.method == ReplicationMethod::Walrus && r.transport == TransferTransport::TlsTcp
    });
    if !tls_tcp {
        return layer.ok_or_else(|| RunError::Role {
            node: node.to_owned(),
            detail: "the group layer has no point-to-point streams for the replicator".into(),
        });
    }
    let n = config.node(node)?;
    let limits = match config.timing.gcs_profile {
        GcsProfile::Lan => Limits::lan(),
        GcsProfile::Wan => Limits::wan(),
    };
    let streams = TcpStreams::bind(
        n.address,
        bulk_peers(config, node),
        &node_identity(config, node)?,
        &limits,
    )
    .await
    .map_err(|e| RunError::Role {
        node: node.to_owned(),
        detail: format!("replicator transport tls-tcp: {e}"),
    })?;
    tracing::info!(addr = %streams.local_addr(), "replicator: transfers over TLS/TCP");
    Ok(Arc::new(streams))
}

/// How long a Controller's node view must stay unchanged, while it lacks some configured
/// member peers, before the Controller joins `Controllers` without them (see [`GroupLayer::settled`] and
/// `walrus_actors::group::settle_state`): five failure timeouts of the gcs profile (2 s on
/// a LAN, 20 s on a WAN). Long enough to know: a peer silent for a failure timeout is
/// dead to the group, and the rest covers its link's dial and the view change that
/// merges it (a `settle` and a flush). Until then the Controller is not in
/// `Controllers`, so it is no master: no round, no DNS push (its log says so).
pub fn join_grace(config: &Config) -> Duration {
    match config.timing.gcs_profile {
        GcsProfile::Lan => CoreConfig::lan().failure_timeout * 5,
        GcsProfile::Wan => CoreConfig::wan().failure_timeout * 5,
    }
}

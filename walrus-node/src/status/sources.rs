//! A node's handles the status page reads ([`NodeSources`]), and the task that samples
//! them into a shared [`Observer`].

use super::*;

/// A node's handles the status page reads (clones: they stay valid while the node runs).
#[derive(Clone)]
pub struct NodeSources {
    /// The Controller, if the node runs one.
    pub controller: Option<ControllerHandle>,
    /// The Reporter and its server's name, if the node runs one.
    pub reporter: Option<(String, ReporterHandle)>,
    /// Directors by area.
    pub directors: BTreeMap<AreaName, watch::Receiver<DirectorStatus>>,
    /// The group view.
    pub view: Option<watch::Receiver<Option<ViewChange>>>,
    /// The group node, for its message counters.
    pub gcs: Option<Arc<Gcs>>,
    /// On a client node: the member it is attached to.
    pub attached_to: Option<watch::Receiver<Option<walrus_gcs::NodeId>>>,
    /// On a client node: its link, for its counters.
    pub client: Option<Arc<walrus_actors::group::client::ClientLayer>>,
    /// On a member serving clients: the clients attached to it (`client.` names).
    pub attached_clients: Option<watch::Receiver<Vec<walrus_gcs::NodeId>>>,
    /// This node's name (a client node lists itself among the clients).
    pub node: String,
    /// The Replicator's status, if the node runs one.
    pub replicator: Option<watch::Receiver<ReplicatorStatus>>,
    /// The role actors' supervision record.
    pub supervision: Option<Supervision>,
    /// The configuration in force (changes on a reload).
    pub config: Option<watch::Receiver<Config>>,
    /// Each node's config digest as announced over the group.
    pub digests: Option<watch::Receiver<Digests>>,
    /// This node's embedded name servers, for learned steering's counters and `/steering`.
    pub steering: SteeringServers,
}

impl NodeSources {
    /// The handles of a running member (over walrus-gcs): its roles' and its view.
    pub fn of(rt: &crate::runtime::NodeRuntime<walrus_gcs::Gcs>) -> Self {
        NodeSources {
            view: Some(rt.layer().watch_view()),
            gcs: Some(rt.shared_layer()),
            attached_clients: Some(rt.layer().watch_clients()),
            ..Self::of_roles(rt)
        }
    }

    /// The handles of a running client node: its roles' and the member it is attached to.
    pub fn of_client(
        rt: &crate::runtime::NodeRuntime<walrus_actors::group::client::ClientLayer>,
    ) -> Self {
        NodeSources {
            attached_to: Some(rt.layer().watch_member()),
            client: Some(rt.shared_layer()),
            ..Self::of_roles(rt)
        }
    }

    /// The handles of a running node's roles, whatever its group layer (a client node has
    /// no view and no walrus-gcs node of its own: those stay empty).
    pub fn of_roles<L: walrus_actors::group::GroupLayer>(
        rt: &crate::runtime::NodeRuntime<L>,
    ) -> Self {
        let server = rt
            .config()
            .nodes
            .get(rt.name())
            .and_then(|n| n.server.as_ref())
            .map(|s| s.0.clone());
        NodeSources {
            controller: rt.controller().cloned(),
            reporter: server.zip(rt.reporter().cloned()),
            directors: rt
                .directors()
                .iter()
                .map(|(a, d)| (a.clone(), d.status.clone()))
                .collect(),
            view: None,
            gcs: None,
            attached_to: None,
            client: None,
            attached_clients: None,
            node: rt.name().to_owned(),
            replicator: rt.replicator().cloned(),
            supervision: Some(rt.supervision().clone()),
            config: Some(rt.watch_config()),
            digests: Some(rt.digests()),
            steering: SteeringServers(
                rt.directors()
                    .values()
                    .filter_map(|d| d.embedded.as_ref().map(|(s, _)| s.clone()))
                    .collect(),
            ),
        }
    }

    /// What the handles say now. The Controller is asked through its address
    /// ([`walrus_actors::controller::actor::GetStatus`]); while it cannot answer within
    /// [`STATUS_WAIT`] (it is joining `Controllers`, which waits for the group to settle),
    /// the status it last published is shown.
    pub async fn sample(&self) -> Sample {
        let controller = match &self.controller {
            Some(c) => match tokio::time::timeout(STATUS_WAIT, c.get_status()).await {
                Ok(Ok(s)) => Some(s),
                _ => Some(c.status()),
            },
            None => None,
        };
        let mut clients = BTreeMap::new();
        if let Some(rx) = &self.attached_clients {
            let me = self.node.clone();
            for c in rx.borrow().iter() {
                clients.insert(client_node_name(c), Some(me.clone()));
            }
        }
        if let Some(m) = &self.attached_to {
            let m = m.borrow().as_ref().map(|n| n.as_str().to_owned());
            clients.insert(self.node.clone(), m);
        }
        Sample {
            controller,
            clients,
            client_link: self.client.as_ref().map(|c| c.stats()),
            master: None,
            reporters: self
                .reporter
                .iter()
                .map(|(s, h)| (s.clone(), h.snapshot()))
                .collect(),
            directors: self
                .directors
                .iter()
                .map(|(a, rx)| (a.clone(), rx.borrow().clone()))
                .collect(),
            view: self.view.as_ref().and_then(|v| v.borrow().clone()),
            gcs: self.gcs.as_ref().map(|g| g.stats()),
            attached_to: self
                .attached_to
                .as_ref()
                .map(|m| m.borrow().as_ref().map(|n| n.as_str().to_owned())),
            replicator: self.replicator.as_ref().map(|r| r.borrow().clone()),
            os_source: self.reporter.as_ref().map(|(_, h)| h.os_source()),
            actors: self
                .supervision
                .as_ref()
                .map(Supervision::metrics)
                .unwrap_or_default(),
            digests: self.digests.as_ref().map(|d| d.borrow().clone()),
            steering: self.steering.counters(),
        }
    }
}

/// A client's node name from its group name (`client.eu-2` → `eu-2`).
pub fn client_node_name(name: &walrus_gcs::NodeId) -> String {
    let n = name.as_str();
    n.strip_prefix(crate::config::CLIENT_PREFIX)
        .unwrap_or(n)
        .to_owned()
}

/// How long the sampler waits for an actor's answer to a status request.
pub const STATUS_WAIT: Duration = Duration::from_millis(200);

/// An observer shared between its sampling task and the HTTP handlers.
pub type SharedObserver = Arc<Mutex<Observer>>;

/// Locks an observer (a panicked holder leaves plain data: keep using it).
pub fn lock(o: &SharedObserver) -> std::sync::MutexGuard<'_, Observer> {
    o.lock().unwrap_or_else(|p| p.into_inner())
}

/// Samples `sources` every 100 ms into `observer` until `stop` completes.
pub async fn sample_loop(
    mut sources: NodeSources,
    observer: SharedObserver,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    lock(&observer).set_steering_servers(sources.steering.clone());
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let s = sources.sample().await;
                let reloaded = sources
                    .config
                    .as_mut()
                    .filter(|c| c.has_changed().unwrap_or(false))
                    .map(|c| c.borrow_and_update().clone());
                let mut o = lock(&observer);
                if let Some(c) = reloaded {
                    o.set_config(c);
                }
                o.observe(s);
            }
        }
    }
}

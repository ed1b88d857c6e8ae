//! The actors' group layer on a **client** node (walrus-gcs `PROTOCOL.md`, "Clients"):
//! [`ClientLayer`] and [`ClientGroupSession`], an adapter over
//! [`walrus_gcs::tier::Client`] and [`walrus_gcs::tier::ClientSession`].
//!
//! ```text
//!  actor ─▶ ClientGroupSession ─▶ tier::ClientSession ─▶ tier::Client ══QUIC══▶ member
//!                                                          (attach list, fail-over)
//! ```
//!
//! A client has no place in views: it attaches to one member of its ordered list and the
//! member hosts each of its sessions as a local session. What that means for the actors:
//! - **Membership lists name the hosting member.** A client's session appears in a
//!   group's `Membership` as a session of the member it is attached through (that
//!   member's node and incarnation, the member's session number), and its messages carry
//!   that member as `sender` (with the client's own id in `client`). So [`GroupSession::member`]
//!   here is the client's own view of itself (its `client.` name, its incarnation, its
//!   session number): good for logs, never found in a membership list. Roles whose rules
//!   read the membership (a Controller's master election, a Director's writer election,
//!   the Replicator primary whose announcements count by sender) must run on members;
//!   walrus-node's configuration refuses them on clients.
//! - **No view, no peers.** [`GroupLayer::watch_view`] stays `None`;
//!   [`GroupLayer::settled`] completes once the client is attached
//!   to a member (or after the grace); there are no point-to-point streams
//!   ([`GroupLayer::peer_streams`] is `None`) and no peer list to change.
//! - A crash of the client is a `Disconnect` of its sessions in their groups (members see
//!   it once the member it was attached to sees its link end); a crash of that member is a
//!   fail-over: the client attaches to the next member of its list and opens its sessions
//!   there again (they show up as `Join`s through the new member), resending every
//!   multicast the old member had not confirmed.

use super::{GroupLayer, GroupSession};
use std::time::Duration;
use tokio::sync::watch;
use walrus_gcs::tier::{Client, ClientLinkConfig, ClientLinkError, ClientSession, ClientStats};
use walrus_gcs::{DriverError, Event, GroupName, Incarnation, Member, NodeId, Service, ViewChange};

/// A client's failure as the actors' error type.
fn driver_error(e: ClientLinkError) -> DriverError {
    match e {
        ClientLinkError::Stopped => DriverError::Stopped,
        other => DriverError::Clients(other.to_string()),
    }
}

/// The group layer of a client node (see the module doc).
pub struct ClientLayer {
    client: Client,
    name: NodeId,
    incarnation: Incarnation,
    /// Always `None`: a client is in no view ([`GroupLayer::watch_view`]).
    no_view: watch::Sender<Option<ViewChange>>,
}

impl ClientLayer {
    /// Starts the client: it attaches to the first member of `config.members` that admits
    /// it (in the background; sessions opened before then are announced once attached).
    /// Without an incarnation in `config`, the wall clock in ms is taken.
    pub async fn attach(mut config: ClientLinkConfig) -> Result<Self, DriverError> {
        let incarnation = *config.incarnation.get_or_insert_with(|| {
            Incarnation(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_millis() as u64),
            )
        });
        let name = config.name.clone();
        let client = Client::attach(config).await.map_err(driver_error)?;
        Ok(Self {
            client,
            name,
            incarnation,
            no_view: watch::Sender::new(None),
        })
    }

    /// The member the client is attached to now (`None` between links).
    pub fn watch_member(&self) -> tokio::sync::watch::Receiver<Option<NodeId>> {
        self.client.watch_member()
    }

    /// The link's counters (attachments, links lost, messages, unconfirmed multicasts).
    pub fn stats(&self) -> ClientStats {
        self.client.stats()
    }

    /// Its name (`client.…`).
    pub fn name(&self) -> &NodeId {
        &self.name
    }
}

/// One session of a client node (see the module doc for what [`GroupSession::member`]
/// means here).
pub struct ClientGroupSession {
    session: ClientSession,
    member: Member,
}

impl GroupSession for ClientGroupSession {
    fn member(&self) -> &Member {
        &self.member
    }

    async fn join(&self, group: GroupName) -> Result<(), DriverError> {
        self.session.join(group).await.map_err(driver_error)
    }

    async fn leave(&self, group: GroupName) -> Result<(), DriverError> {
        self.session.leave(group).await.map_err(driver_error)
    }

    async fn multicast(
        &self,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<(), DriverError> {
        self.session
            .multicast(service, groups, payload)
            .await
            .map(|_| ())
            .map_err(driver_error)
    }

    async fn recv(&mut self) -> Option<Event> {
        self.session.recv().await
    }

    async fn close(self) {
        self.session.close().await
    }
}

impl GroupLayer for ClientLayer {
    type Session = ClientGroupSession;

    async fn open_session(&self) -> Result<ClientGroupSession, DriverError> {
        let session = self.client.open_session().await.map_err(driver_error)?;
        let member = Member {
            node: self.name.clone(),
            incarnation: self.incarnation,
            session: session.id(),
        };
        Ok(ClientGroupSession { session, member })
    }

    async fn shutdown(&self) {
        self.client.shutdown().await
    }

    /// Always `None`: a client is in no view (its member is, see
    /// [`ClientLayer::watch_member`]).
    fn watch_view(&self) -> watch::Receiver<Option<ViewChange>> {
        self.no_view.subscribe()
    }

    /// Completes once the client is attached to a member, or after `grace`.
    /// Completes once the client is attached to a member, or after `grace` (a client is in
    /// no view: `expected` does not apply; returned as missing only when not attached).
    async fn settled(&self, grace: Duration, expected: &[NodeId]) -> Vec<NodeId> {
        let mut member = self.client.watch_member();
        let attached = tokio::time::timeout(grace, member.wait_for(Option::is_some))
            .await
            .is_ok_and(|r| r.is_ok());
        if attached {
            Vec::new()
        } else {
            expected.to_vec()
        }
    }
}

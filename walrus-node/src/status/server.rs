//! The HTTP side (actix-web): `/status`, `/history`, `/metrics`, the dashboard, and the
//! admins' `/admin/override`, behind [`HttpAccess`] (TLS, token, admin certificates).

use super::*;

/// The dashboard page: plain HTML and JavaScript polling `/status`; no external assets.
pub const DASHBOARD: &str = include_str!("../dashboard.html");

/// A running status server.
pub struct StatusServer {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<()>,
}

impl StatusServer {
    /// Binds `addr` (port 0: any free port) and serves `/status`, `/metrics` and `/` from
    /// `observer` over plain HTTP to anyone, on one actix-web worker (the demo, tests on
    /// loopback). Must run inside a tokio runtime.
    pub fn start(addr: SocketAddr, observer: SharedObserver) -> Result<Self, StatusError> {
        Self::start_with(addr, observer, HttpAccess::open(), None)
    }

    /// [`Self::start`] with `access`'s token, TLS and admins ([`crate::http_access`]);
    /// `controller` takes the admins' drains and pins (`POST /admin/override`).
    pub fn start_with(
        addr: SocketAddr,
        observer: SharedObserver,
        access: HttpAccess,
        controller: Option<ControllerHandle>,
    ) -> Result<Self, StatusError> {
        let bind_err = |source| StatusError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let tls = access.tls();
        let access = web::Data::new(access);
        let controller = web::Data::new(controller);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(observer.clone()))
                .app_data(access.clone())
                .app_data(controller.clone())
                .route("/admin/override", web::post().to(admin_override))
                .route("/status", web::get().to(status_json))
                .route("/metrics", web::get().to(metrics_text))
                .route("/history", web::get().to(history_json))
                .route("/steering", web::get().to(steering_json))
                .route("/", web::get().to(dashboard))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .on_connect(|conn, ext| {
            // The client's certificate chain (verified by the handshake), for the admin
            // routes.
            type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
            if let Some(tls) = conn.downcast_ref::<Tls>() {
                if let Some(chain) = tls.get_ref().1.peer_certificates() {
                    ext.insert(PeerChain(chain.to_vec()));
                }
            }
        });
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, (*config).clone()),
            None => server.listen(listener),
        }
        .map_err(bind_err)?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "status server stopped");
            }
        });
        Ok(Self {
            addr: local,
            handle,
            task,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

/// `answer()` if `access` lets this request through, else 401.
fn guarded(
    req: &HttpRequest,
    access: &HttpAccess,
    answer: impl FnOnce() -> HttpResponse,
) -> HttpResponse {
    let auth = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if access.allows(req.path(), auth) {
        return answer();
    }
    HttpResponse::Unauthorized()
        .insert_header(("WWW-Authenticate", "Bearer realm=\"walrus\""))
        .body("this node's status needs its token: Authorization: Bearer <[http] token_file>\n")
}

/// The certificate chain a TLS client presented (none: no entry).
#[derive(Clone)]
struct PeerChain(Vec<rustls::pki_types::CertificateDer<'static>>);

/// An admin's request to `POST /admin/override` (JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AdminRequest {
    /// `drain`, `undrain`, `pin` or `unpin`.
    pub action: String,
    /// The server (drain, undrain).
    #[serde(default)]
    pub server: Option<String>,
    /// The area (pin, unpin).
    #[serde(default)]
    pub area: Option<String>,
    /// The cluster (pin).
    #[serde(default)]
    pub cluster: Option<String>,
    /// How long, seconds (drain, pin).
    #[serde(default)]
    pub for_secs: Option<u64>,
    /// Why (shown in every decision reason and log line).
    #[serde(default)]
    pub reason: String,
}

/// Turns an admin's request into a command, checked against `config`'s servers, areas and
/// clusters; the error is the 400 answer's text.
pub fn admin_command(
    req: &AdminRequest,
    by: &str,
    config: &Config,
    now_ms: u64,
) -> Result<walrus_actors::controller::overrides::Command, String> {
    use walrus_actors::controller::overrides::{Command, Override};
    use walrus_actors::model::{ClusterName, ServerName};
    let server = || -> Result<ServerName, String> {
        let s = ServerName(req.server.clone().ok_or("`server` is missing")?);
        if config.clusters.values().any(|c| c.servers.contains_key(&s)) {
            Ok(s)
        } else {
            Err(format!("there is no server `{s}`"))
        }
    };
    let area = || -> Result<AreaName, String> {
        let a = AreaName(req.area.clone().ok_or("`area` is missing")?);
        if config.areas.contains_key(&a) {
            Ok(a)
        } else {
            Err(format!("there is no area `{a}`"))
        }
    };
    let until = || -> Result<u64, String> {
        let secs = req.for_secs.ok_or("`for_secs` is missing: say how long")?;
        if secs == 0 {
            return Err("`for_secs` must be more than 0".into());
        }
        Ok(now_ms.saturating_add(secs.saturating_mul(1000)))
    };
    let set = |target| -> Result<Command, String> {
        Ok(Command::Set(Override {
            target,
            by: by.to_owned(),
            reason: req.reason.clone(),
            until_ms: until()?,
        }))
    };
    match req.action.as_str() {
        "drain" => set(Target::Drain { server: server()? }),
        "pin" => {
            let c = ClusterName(req.cluster.clone().ok_or("`cluster` is missing")?);
            if !config.clusters.contains_key(&c) {
                return Err(format!("there is no cluster `{c}`"));
            }
            set(Target::Pin {
                area: area()?,
                cluster: c,
            })
        }
        "undrain" => Ok(Command::Undrain {
            server: server()?,
            by: by.to_owned(),
        }),
        "unpin" => Ok(Command::Unpin {
            area: area()?,
            by: by.to_owned(),
        }),
        other => Err(format!(
            "`{other}` is not an action: drain, undrain, pin or unpin"
        )),
    }
}

async fn admin_override(
    req: HttpRequest,
    body: web::Json<AdminRequest>,
    o: web::Data<SharedObserver>,
    access: web::Data<HttpAccess>,
    controller: web::Data<Option<ControllerHandle>>,
) -> HttpResponse {
    let chain = req
        .conn_data::<PeerChain>()
        .map(|c| c.0.clone())
        .unwrap_or_default();
    let Some(admin) = access.admin_of(&chain) else {
        tracing::warn!(peer = ?req.peer_addr(), certificate = !chain.is_empty(), "drain/pin refused: no admin certificate");
        return HttpResponse::Forbidden().body(
            "drain and pin need an admin certificate (walrus-node certs issue --admin NAME) \
             named in [http] admins; a node certificate cannot\n",
        );
    };
    let Some(ctl) = controller.get_ref().clone() else {
        return HttpResponse::Conflict()
            .body("this node runs no Controller: send the request to a Controller node\n");
    };
    let cmd = {
        let obs = lock(&o);
        match admin_command(&body, &admin, obs.config(), wall_clock_ms()) {
            Ok(c) => c,
            Err(e) => return HttpResponse::BadRequest().body(format!("{e}\n")),
        }
    };
    tracing::info!(%admin, action = %body.action, server = ?body.server, area = ?body.area,
        cluster = ?body.cluster, for_secs = ?body.for_secs, reason = %body.reason,
        "operator override requested");
    match ctl.send_override(cmd).await {
        Ok(()) => HttpResponse::Ok().body(format!("{} accepted from {admin}\n", body.action)),
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("{e}\n")),
    }
}

fn json_no_store(body: impl Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(body)
}

async fn status_json(
    req: HttpRequest,
    o: web::Data<SharedObserver>,
    access: web::Data<HttpAccess>,
) -> HttpResponse {
    guarded(&req, &access, || json_no_store(lock(&o).doc()))
}

async fn history_json(
    req: HttpRequest,
    o: web::Data<SharedObserver>,
    access: web::Data<HttpAccess>,
) -> HttpResponse {
    guarded(&req, &access, || {
        json_no_store(lock(&o).history(wall_clock_ms()))
    })
}

/// `/steering?resolver=ADDR`: how this node's name servers answer that resolver, and why.
async fn steering_json(
    req: HttpRequest,
    o: web::Data<SharedObserver>,
    access: web::Data<HttpAccess>,
) -> HttpResponse {
    guarded(&req, &access, || {
        let resolver = req
            .query_string()
            .split('&')
            .find_map(|kv| kv.strip_prefix("resolver="))
            .and_then(|v| v.parse::<std::net::IpAddr>().ok());
        match resolver {
            Some(ip) => json_no_store(lock(&o).resolver_doc(ip)),
            None => HttpResponse::BadRequest().body("expected ?resolver=ADDR (an IP address)\n"),
        }
    })
}

async fn metrics_text(
    req: HttpRequest,
    o: web::Data<SharedObserver>,
    access: web::Data<HttpAccess>,
) -> HttpResponse {
    guarded(&req, &access, || {
        HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(render_metrics(&lock(&o).doc()))
    })
}

async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(DASHBOARD)
}

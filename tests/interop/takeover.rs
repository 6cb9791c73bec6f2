//! Two vacme processes on one PostgreSQL database behind a TCP balancer, fronting the real
//! OpenBao. Replica `a` holds validations (the http-01 responder is slow to answer) and signings
//! (OpenBao is frozen) when it is killed with SIGKILL; replica `b` takes that work over once the
//! leases `a` stopped renewing run out, and every order ends valid, signed exactly once.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use instant_acme::{Account, ChallengeType, Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy};

use crate::{
    Vacme,
    bao::{Bao, ZONE},
    dns::TestDns,
    install_provider,
    pgdb::Database,
    procs::{free_port, tools_bin, wait_until},
    verify_chain,
};

/// Orders whose validation `a` holds, and orders whose signing `a` holds, when it dies.
const VALIDATING: usize = 4;
const SIGNING: usize = 4;

/// An http-01 responder whose answers wait while `hold` is set (bounded), counting the requests.
struct Responder {
    port: u16,
    answers: Arc<Mutex<HashMap<String, String>>>,
    hold: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
}

impl Responder {
    async fn start() -> Responder {
        let answers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let (hold, held) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (a, h, n) = (answers.clone(), hold.clone(), held.clone());
        let app = axum::Router::new().route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(move |axum::extract::Path(t): axum::extract::Path<String>| {
                let (a, h, n) = (a.clone(), h.clone(), n.clone());
                async move {
                    if h.load(Ordering::SeqCst) {
                        n.fetch_add(1, Ordering::SeqCst);
                        for _ in 0..400 {
                            if !h.load(Ordering::SeqCst) {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    a.lock().unwrap().get(&t).cloned().unwrap_or_default()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Responder { port, answers, hold, held }
    }
}

/// A TCP balancer on loopback: each connection goes to the first backend in the list that
/// accepts it (`a` while it lives, then `b`), so the test knows which replica took the work.
async fn balancer(backends: Vec<u16>) -> u16 {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let backends = backends.clone();
            tokio::spawn(async move {
                for port in backends {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                }
            });
        }
    });
    port
}

/// What both replicas share: the name clients use (the balancer's port), the data folder (local
/// CA), the database, the http-01 responder, the DNS server and OpenBao.
struct Shared<'a> {
    dir: &'a Path,
    public: u16,
    db: &'a str,
    http01: u16,
    ns: String,
    bao: &'a Bao,
}

/// The configuration of one replica, listening on `port`.
fn replica_config(shared: &Shared<'_>, name: &str, port: u16) -> Vec<String> {
    let Shared { dir, public, db, http01, ns, bao } = shared;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nbase_url = \"https://localhost:{public}\"\ndata_dir = \"{data}\"\n\n\
         [database]\nurl = \"{db}\"\n\n\
         [policy]\nallowed_domains = [\"{ZONE}\"]\n\n\
         [validation]\nhttp01_port = {http01}\nnameservers = [\"{ns}\"]\nallowed_targets = [\"127.0.0.0/8\"]\n\
         timeout_secs = 30\n\n\
         [issuance]\nfinalize_wait_secs = 1\n\n\
         [vault]\naddress = \"{vault}\"\ntimeout_secs = 30\n\n[vault.auth]\ntoken_file = \"{token}\"\n",
        data = dir.join("data").display(),
        vault = bao.addr,
        token = bao.token_file.display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    vec!["--config".into(), path.display().to_string()]
}

/// A new order for `<host>.lab.test` with its http-01 challenge answered.
async fn answered_order(account: &Account, r: &Responder, host: &str) -> Order {
    let name = format!("{host}.{ZONE}");
    let mut order = account.new_order(&NewOrder::new(&[Identifier::Dns(name)])).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        let mut chall = authz.challenge(ChallengeType::Http01).unwrap();
        r.answers.lock().unwrap().insert(chall.token.clone(), chall.key_authorization().as_str().to_owned());
        chall.set_ready().await.unwrap();
    }
    order
}

/// A counter of a replica's `/metrics`, summed over the series whose labels contain `labels`.
pub(crate) async fn counter(http: &reqwest::Client, port: u16, name: &str, labels: &str) -> u64 {
    let text = http.get(format!("https://localhost:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_work_is_taken_over_by_the_other_within_seconds() {
    const TEST: &str = "a_replica_killed_mid_work_is_taken_over_by_the_other_within_seconds";
    let Some(tools) = tools_bin(TEST) else { return };
    let Some(db) = Database::create(&format!("takeover::{TEST}")).await else { return };
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let bao = Bao::start(&tools, dir.path()).await;
    let dns = TestDns::with_zone(ZONE, Ipv4Addr::LOCALHOST).await;
    let responder = Responder::start().await;
    let (port_a, port_b) = (free_port(), free_port());
    let public = balancer(vec![port_a, port_b]).await;
    let shared =
        Shared { dir: dir.path(), public, db: &db.url, http01: responder.port, ns: dns.addr().to_string(), bao: &bao };
    let (args_a, args_b) = (replica_config(&shared, "a", port_a), replica_config(&shared, "b", port_b));
    let data = dir.path().join("data");
    let a = Vacme::start(args_a, port_a, &data, dir.path()).await;
    let log =
        |b: Option<&Vacme>| format!("{}\n{}", a.process.output(), b.map(|b| b.process.output()).unwrap_or_default());

    let (account, _) = Account::builder_with_root(a.ca_bundle())
        .unwrap()
        .create(
            &NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false },
            format!("https://localhost:{public}/directory"),
            None,
        )
        .await
        .unwrap();
    // Orders `s*` validated now, signed later; orders `v*` validated later.
    let mut signing = Vec::new();
    for i in 0..SIGNING {
        signing.push(answered_order(&account, &responder, &format!("s{i}")).await);
    }
    for order in &mut signing {
        assert_eq!(order.poll_ready(&RetryPolicy::default()).await.unwrap(), OrderStatus::Ready);
    }
    // Only `a` runs: it claims the validations, whose answers the responder holds.
    responder.hold.store(true, Ordering::SeqCst);
    let mut validating = Vec::new();
    for i in 0..VALIDATING {
        validating.push(answered_order(&account, &responder, &format!("v{i}")).await);
    }
    let held =
        wait_until(Duration::from_secs(20), || async { responder.held.load(Ordering::SeqCst) >= VALIDATING }).await;
    assert!(held, "a did not start the validations\n{}", log(None));
    // `b` comes up while `a` holds (and renews) the validations' leases: it takes none.
    let b = Vacme::start(args_b, port_b, &data, dir.path()).await;
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(b.ca_bundle()).unwrap()).unwrap())
        .build()
        .unwrap();
    // The signings, which OpenBao (frozen) does not answer: finalize reaches `a`, whose worker
    // it wakes (`b` only polls).
    bao.process.signal("STOP");
    for order in &mut signing {
        order.finalize().await.unwrap();
        assert_eq!(order.state().status, OrderStatus::Processing);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        counter(&http, port_b, "vacme_job_takeovers_total", "").await,
        0,
        "a's leases are renewed\n{}",
        log(Some(&b))
    );

    a.process.signal("KILL");
    let killed = Instant::now();
    bao.process.signal("CONT");
    responder.hold.store(false, Ordering::SeqCst);

    // Polled every 200 ms, so the times below are the server's, not the client's backoff.
    let retry =
        RetryPolicy::new().initial_delay(Duration::from_millis(200)).backoff(1.0).timeout(Duration::from_secs(60));
    // What a client holding a certificate checks: the chain leads to OpenBao's root, one name.
    let mut serials = Vec::new();
    let mut fetch = async |i: usize, order: &mut Order| {
        let chain =
            order.poll_certificate(&retry).await.unwrap_or_else(|e| panic!("order {i}: {e}\n{}", log(Some(&b))));
        let path = dir.path().join(format!("o{i}.pem"));
        std::fs::write(&path, &chain).unwrap();
        let (sans, issuer) = verify_chain(&path, &bao.root_pem);
        assert_eq!((sans.len(), issuer.as_str()), (1, "Lab Intermediate CA"));
        serials.push(crate::lifecycle::leaf_facts(&path).1);
    };
    for (i, order) in signing.iter_mut().enumerate() {
        fetch(i, order).await;
    }
    let signed_after = killed.elapsed();
    for order in &mut validating {
        let status = order.poll_ready(&retry).await.unwrap_or_else(|e| panic!("{e}\n{}", log(Some(&b))));
        assert_eq!(status, OrderStatus::Ready, "{}", log(Some(&b)));
    }
    let validated_after = killed.elapsed();
    for (i, order) in validating.iter_mut().enumerate() {
        order.finalize().await.unwrap();
        fetch(SIGNING + i, order).await;
    }
    let in_vault = bao.issued_serials().await;
    let validations = counter(&http, port_b, "vacme_job_takeovers_total", "job=\"validation\"").await;
    let signings = counter(&http, port_b, "vacme_job_takeovers_total", "job=\"issuance\"").await;
    eprintln!(
        "take-over after SIGKILL: {VALIDATING} validations ready after {:.1} s, {SIGNING} signings done after {:.1} s; \
         b took over {validations} validations and {signings} signings; {} certificates in pki_int for {} orders",
        validated_after.as_secs_f64(),
        signed_after.as_secs_f64(),
        in_vault.len(),
        SIGNING + VALIDATING
    );
    assert_eq!(in_vault.len(), SIGNING + VALIDATING, "one signature per order: {in_vault:?}");
    for s in &serials {
        assert!(
            in_vault.iter().any(|v| v.replace(':', "").trim_start_matches('0') == s.trim_start_matches('0')),
            "{s}"
        );
    }
    assert_eq!(validations, VALIDATING as u64, "b took over every validation a held");
    // `b` may rarely have claimed a finalized order itself in the moment before `a`'s worker did.
    assert!((1..=SIGNING as u64).contains(&signings), "b took over the signings a held: {signings}");
    // The lease (6 s, renewed every 2 s) and a poll: about 8 s; more is margin for a slow machine.
    assert!(validated_after < Duration::from_secs(15), "validations taken over in {validated_after:?}");
    assert!(signed_after < Duration::from_secs(15), "signings taken over in {signed_after:?}");
    drop(b);
    db.drop().await;
}

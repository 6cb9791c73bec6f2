//! DESIGN.md's "What bad input gets": a CSR with anything vacme does not fully understand is
//! `badCSR`, the order stays `ready`, and the CA is never called; RFC 8555 §7.4 then lets the
//! client finalize the same order again with a good CSR.

use instant_acme::{Error, Identifier, NewOrder, OrderStatus, RetryPolicy};

use crate::env::TestEnv;

#[path = "../support/hostile_csr.rs"]
mod build;

use build::{good_csrs, hostile_csrs};

#[tokio::test]
async fn hostile_csrs_are_bad_csr_and_the_order_stays_ready() {
    let env = TestEnv::start().await;
    let (account, _) = env.account().await;
    let mut order = account.new_order(&NewOrder::new(&[Identifier::Dns("a.localhost".into())])).await.unwrap();
    env.answer_all(&mut order).await;
    assert_eq!(order.poll_ready(&RetryPolicy::default()).await.unwrap(), OrderStatus::Ready);
    let order_id = order.url().rsplit('/').next().unwrap().to_owned();
    let before = env.counts().await;

    let cases = hostile_csrs(&["a.localhost"], "victim.localhost");
    assert!(cases.len() >= 20, "the whole table runs");
    for (case, der) in &cases {
        match order.finalize_csr(der).await {
            Err(Error::Api(p)) => {
                assert_eq!(
                    (p.status, p.r#type.as_deref()),
                    (Some(400), Some("urn:ietf:params:acme:error:badCSR")),
                    "{case}: {p:?}"
                );
                assert!(p.detail.as_deref().is_some_and(|d| d.contains("CSR")), "{case}: says what was refused: {p:?}");
            }
            other => panic!("{case}: finalize answered {other:?}, not badCSR"),
        }
        // The client sees the order still ready (POST-as-GET), and so does the store.
        assert_eq!(order.refresh().await.unwrap().status, OrderStatus::Ready, "{case}");
        let stored = env.state.store.order(&order_id).await.unwrap().unwrap();
        assert_eq!(stored.status.as_str(), "ready", "{case}");
        assert_eq!(env.counts().await, before, "{case}: nothing written, no certificate signed");
    }

    // The same order, finalized again with a CSR as cert-manager sends it, is issued.
    let (_, good) = good_csrs(&["a.localhost"]).into_iter().find(|(n, _)| *n == "cert-manager").unwrap();
    order.finalize_csr(&good).await.unwrap();
    let chain = order.poll_certificate(&RetryPolicy::default()).await.unwrap();
    assert!(chain.contains("BEGIN CERTIFICATE"));
    assert_eq!(order.state().status, OrderStatus::Valid);
    assert_eq!(env.counts().await.certificates, before.certificates + 1, "exactly one certificate, for the good CSR");
}

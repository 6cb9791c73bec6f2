//! The issuance worker re-checks an order that is already `processing` just before it signs:
//! an account deactivated meanwhile gets nothing signed.

use std::time::Duration;

use instant_acme::{Identifier, NewOrder, OrderStatus, RetryPolicy};

use crate::env::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_of_an_account_deactivated_while_processing_is_invalid_and_not_signed() {
    // A CA that cannot be reached: finalized orders wait in `processing`.
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "hvs.test").unwrap();
    let vault = format!(
        "address = \"http://127.0.0.1:1\"\ntimeout_secs = 1\n[auth]\nmethod = \"token\"\ntoken_file = \"{}\"\n",
        token.path().display()
    );
    let env = TestEnv::start_with(|c| {
        c.vault = Some(toml::from_str(&vault).unwrap());
        c.issuance.finalize_wait_secs = 1;
    })
    .await;
    let (account, _) = env.account().await;
    let ids = [Identifier::Dns("held.localhost".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    env.answer_all(&mut order).await;
    assert_eq!(order.poll_ready(&RetryPolicy::default()).await.unwrap(), OrderStatus::Ready);
    order.finalize().await.unwrap();
    assert_eq!(order.refresh().await.unwrap().status, OrderStatus::Processing);

    let store = &env.state.store;
    let order_id = order.url().rsplit('/').next().unwrap().to_owned();
    let account_id = store.order(&order_id).await.unwrap().unwrap().account_id;
    store.deactivate_account(&account_id, env.state.clock.unix()).await.unwrap();

    // The worker's next attempt (backoff of at most a few seconds) refuses before signing.
    let mut row = store.order(&order_id).await.unwrap().unwrap();
    for _ in 0..40 {
        if row.status != vacme::acme::types::OrderStatus::Processing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        row = store.order(&order_id).await.unwrap().unwrap();
    }
    assert_eq!(row.status, vacme::acme::types::OrderStatus::Invalid);
    let error = row.error.unwrap();
    assert_eq!(error["type"], "urn:ietf:params:acme:error:unauthorized", "{error}");
    assert!(row.certificate_id.is_none(), "nothing was signed");
    assert_eq!(env.counts().await.certificates, 0);
    let audit = store.audit_events(Some(&account_id), 20).await.unwrap();
    assert!(audit.iter().any(|e| e.event.event == "issuance_refused"), "{audit:?}");
}

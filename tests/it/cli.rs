//! The admin CLI (`vacme eab|accounts|certs`) on the store of a running vacme: what it prints,
//! and what it changes that clients then see.

use instant_acme::{Account, ExternalAccountKey, Identifier, NewAccount, NewOrder};
use serde_json::Value;
use vacme::{
    cli::{Admin, CliError, EabCreate, run},
    config::{Config, Overrides},
};

use crate::env::TestEnv;

/// The configuration of `env`'s server, as `vacme --data-dir <dir>` would load it.
fn config_of(env: &TestEnv) -> Config {
    let overrides = Overrides { data_dir: Some(env.dir.path().to_owned()), ..Default::default() };
    Config::load(None, Vec::new(), &overrides).unwrap()
}

async fn json(config: &Config, cmd: Admin) -> Value {
    serde_json::from_str(&run(config, cmd, true).await.unwrap()).unwrap()
}

#[tokio::test]
async fn certs_and_accounts_are_listed_revoked_and_deactivated() {
    let env = TestEnv::start().await;
    let config = config_of(&env);
    let (account, _) = env.account().await;
    let (_, chain) = env.issue(&account, &["nas.localhost"]).await;

    let accounts = json(&config, Admin::AccountsList).await;
    assert_eq!(accounts.as_array().unwrap().len(), 1);
    assert_eq!((accounts[0]["orders"].as_i64(), accounts[0]["certificates"].as_i64()), (Some(1), Some(1)));
    let account_id = accounts[0]["id"].as_str().unwrap().to_owned();

    let certs = json(&config, Admin::CertsList { account: Some(account_id.clone()), all: false }).await;
    let serial = certs[0]["serial"].as_str().unwrap().to_owned();
    assert_eq!(certs[0]["state"], "valid");
    assert_eq!(certs[0]["identifiers"][0]["value"], "nas.localhost");
    let table = run(&config, Admin::CertsList { account: None, all: false }, false).await.unwrap();
    assert!(table.starts_with("ID") && table.contains(&serial) && table.contains("nas.localhost"), "{table}");
    let shown = run(&config, Admin::CertsShow(serial.clone()), false).await.unwrap();
    assert!(shown.contains(chain.lines().nth(1).unwrap()), "show prints the chain:\n{shown}");

    // A reason a subscriber may not give is refused and changes nothing.
    let bad = run(&config, Admin::CertsRevoke { id: serial.clone(), reason: 6 }, true).await.unwrap_err();
    assert!(matches!(bad, CliError::Usage(ref m) if m.contains("not accepted")), "{bad}");
    let revoked = json(&config, Admin::CertsRevoke { id: serial.clone(), reason: 1 }).await;
    assert_eq!((revoked["revoked"].as_bool(), revoked["ca_confirmed"].as_bool()), (Some(true), Some(true)));
    let row = &env.state.store.certificates_by_serial(&serial).await.unwrap()[0];
    assert_eq!((row.revocation_reason, row.ca_revoked_at.is_some()), (Some(1), true));
    let twice = run(&config, Admin::CertsRevoke { id: serial.clone(), reason: 1 }, false).await.unwrap_err();
    assert!(twice.to_string().contains("already revoked"), "{twice}");
    assert!(matches!(run(&config, Admin::CertsShow("nope".into()), false).await, Err(CliError::NotFound(_))));

    // Deactivated by the operator: the account's key can no longer order.
    let done = json(&config, Admin::AccountsDeactivate(account_id.clone())).await;
    assert_eq!(done["deactivated"], true);
    let refused = account.new_order(&NewOrder::new(&[Identifier::Dns("nas.localhost".into())])).await;
    assert!(format!("{:?}", refused.err().expect("refused")).contains("unauthorized"));
    let again = json(&config, Admin::AccountsDeactivate(account_id.clone())).await;
    assert_eq!(again["deactivated"], false, "nothing to do the second time");
    let shown = json(&config, Admin::AccountsShow(account_id)).await;
    assert_eq!(shown["status"], "deactivated");
}

#[tokio::test]
async fn eab_keys_from_the_cli_bind_accounts_and_can_be_revoked() {
    let env = TestEnv::start().await;
    let config = config_of(&env);
    let create = |scope: &[&str]| {
        Admin::EabCreate(EabCreate {
            scope: scope.iter().map(|s| (*s).to_owned()).collect(),
            expires_in: Some("1d".into()),
            comment: "nas".into(),
            ..Default::default()
        })
    };
    let bad = run(&config, create(&["a b"]), true).await.unwrap_err();
    assert!(matches!(bad, CliError::Usage(_)), "a bad scope pattern is refused: {bad}");

    let key = json(&config, create(&["*.nas.localhost"])).await;
    let (kid, hmac) = (key["kid"].as_str().unwrap(), key["hmac_key"].as_str().unwrap());
    let printed = run(&config, Admin::EabList, false).await.unwrap();
    assert!(printed.contains(kid) && !printed.contains(hmac), "the key is printed once, never listed:\n{printed}");

    let eab = ExternalAccountKey::new(kid.to_owned(), &base64_url(hmac));
    let new = NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false };
    let (account, _) =
        Account::builder_with_root(&env.ca).unwrap().create(&new, env.directory.clone(), Some(&eab)).await.unwrap();
    env.issue(&account, &["web.nas.localhost"]).await;
    let listed = json(&config, Admin::EabList).await;
    assert_eq!(listed[0]["state"], "used");

    let unused = json(&config, create(&[])).await;
    let unused_kid = unused["kid"].as_str().unwrap().to_owned();
    assert_eq!(json(&config, Admin::EabRevoke(unused_kid.clone())).await["revoked"], true);
    let eab = ExternalAccountKey::new(unused_kid.clone(), &base64_url(unused["hmac_key"].as_str().unwrap()));
    let refused = Account::builder_with_root(&env.ca).unwrap().create(&new, env.directory.clone(), Some(&eab)).await;
    assert!(format!("{:?}", refused.err().expect("refused")).contains("revoked"));
    assert!(matches!(run(&config, Admin::EabRevoke("kid-none".into()), false).await, Err(CliError::NotFound(_))));

    // As printed for a person: the key once, and then the flags to paste, in the `=` form.
    let text = run(&config, create(&[]), false).await.unwrap();
    let value = |label: &str| text.lines().find_map(|l| l.strip_prefix(label)).unwrap().trim().to_owned();
    let (kid, hmac) = (value("kid:"), value("hmac key:"));
    assert!(!kid.starts_with('-') && !hmac.starts_with('-'), "{text}");
    let flags: Vec<&str> = text.lines().rev().take(2).collect();
    assert_eq!(
        flags,
        [
            format!("  lego:    --eab --kid={kid} --hmac={hmac}"),
            format!("  certbot: --eab-kid={kid} --eab-hmac-key={hmac}")
        ],
        "{text}"
    );
}

fn base64_url(s: &str) -> Vec<u8> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

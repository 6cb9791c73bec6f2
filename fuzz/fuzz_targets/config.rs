//! Configuration (docs/configuration.md): any TOML file plus any `VACME_*` variables must load
//! or be refused with a `ConfigError`, never panic; and what `check-config` prints for an
//! accepted configuration loads again to the same effective configuration.
//!
//! Input: the file's text, optionally followed by a NUL and `KEY=value` lines, each read as the
//! variable `VACME_KEY` (so `VAULT__ROLE=x` is `VACME_VAULT__ROLE=x`).
#![no_main]

use std::{io::Write, path::PathBuf, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use vacme::config::{Config, Overrides};

fuzz_target!(|data: &[u8]| {
    let (file, env) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("VACME_{k}"), v.to_owned()))
        .collect();

    let Ok(config) = load(file, env) else { return };
    let _ = (config.base_url(config.server.listen), config.database_url(), config.eab_secret_file());
    let _ = (config.nameservers(), config.allowed_targets(), config.validation_timeout());

    // `vacme check-config` output is a complete configuration file.
    let rendered = config.to_toml();
    let again = load(rendered.as_bytes(), Vec::new())
        .unwrap_or_else(|e| panic!("check-config output does not load: {e}\n{rendered}"));
    assert_eq!(again.to_toml(), rendered, "check-config output loads to a different configuration");
});

/// `Config::load` reads a path, as `vacme serve --config` does; one scratch file is reused.
fn load(text: &[u8], env: Vec<(String, String)>) -> Result<Config, vacme::config::ConfigError> {
    let path = scratch();
    let mut f = std::fs::File::create(path).expect("the scratch config file is writable");
    f.write_all(text).expect("the scratch config file is writable");
    drop(f);
    Config::load(Some(path), env, &Overrides::default())
}

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| DIR.get_or_init(|| tempfile::tempdir().expect("a scratch dir")).path().join("vacme.toml"))
}

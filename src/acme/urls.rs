//! Every URL vacme hands out, built from one base. Handlers never format URLs themselves.

/// The URL scheme of one deployment.
#[derive(Clone, Debug)]
pub struct Urls {
    base: String,
}

/// Path prefix of all ACME resources.
pub const ACME: &str = "/acme";

impl Urls {
    /// `base` is e.g. `https://acme.lab.example:8443`, no trailing slash.
    pub fn new(base: impl Into<String>) -> Self {
        Self { base: base.into().trim_end_matches('/').to_owned() }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The absolute URL of a request path, for the JWS `url` check (RFC 8555 §6.4).
    pub fn absolute(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn directory(&self) -> String {
        format!("{}/directory", self.base)
    }
    pub fn new_nonce(&self) -> String {
        format!("{}{ACME}/new-nonce", self.base)
    }
    pub fn new_account(&self) -> String {
        format!("{}{ACME}/new-account", self.base)
    }
    pub fn new_order(&self) -> String {
        format!("{}{ACME}/new-order", self.base)
    }
    pub fn account(&self, id: &str) -> String {
        format!("{}{ACME}/acct/{id}", self.base)
    }
    pub fn orders(&self, account_id: &str) -> String {
        format!("{}{ACME}/acct/{account_id}/orders", self.base)
    }
    pub fn order(&self, id: &str) -> String {
        format!("{}{ACME}/order/{id}", self.base)
    }
    pub fn finalize(&self, id: &str) -> String {
        format!("{}{ACME}/order/{id}/finalize", self.base)
    }
    pub fn authz(&self, id: &str) -> String {
        format!("{}{ACME}/authz/{id}", self.base)
    }
    pub fn challenge(&self, id: &str) -> String {
        format!("{}{ACME}/chall/{id}", self.base)
    }
    pub fn certificate(&self, id: &str) -> String {
        format!("{}{ACME}/cert/{id}", self.base)
    }
    pub fn revoke_cert(&self) -> String {
        format!("{}{ACME}/revoke-cert", self.base)
    }
    pub fn key_change(&self) -> String {
        format!("{}{ACME}/key-change", self.base)
    }
    /// RFC 9773 §4: clients append `/<certID>`.
    pub fn renewal_info(&self) -> String {
        format!("{}{ACME}/renewal-info", self.base)
    }

    /// The account ID in a `kid` (an account URL of this server), if it is one.
    pub fn account_id_of_kid<'a>(&self, kid: &'a str) -> Option<&'a str> {
        let prefix = format!("{}{ACME}/acct/", self.base);
        let id = kid.strip_prefix(prefix.as_str())?;
        (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_must_be_one_of_our_account_urls() {
        let u = Urls::new("https://acme.lab:8443/");
        assert_eq!(u.account_id_of_kid("https://acme.lab:8443/acme/acct/abc_-1"), Some("abc_-1"));
        for bad in [
            "https://evil:8443/acme/acct/abc",
            "https://acme.lab:8443/acme/acct/",
            "https://acme.lab:8443/acme/acct/a/orders",
            "abc",
        ] {
            assert_eq!(u.account_id_of_kid(bad), None, "{bad}");
        }
    }
}

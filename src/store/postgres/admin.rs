//! The admin dashboard's listings on PostgreSQL: the statements `store::admin` builds, bound here.

use sqlx::{Postgres as Pg, postgres::PgArguments, query::QueryAs};

use super::Postgres;
use crate::store::{
    AuditRow, CertListRow, Result,
    admin::{Built, Param},
    rows::{RawAudit, RawCertList},
};

fn bind<'q, T>(mut q: QueryAs<'q, Pg, T, PgArguments>, b: &'q Built) -> QueryAs<'q, Pg, T, PgArguments> {
    for p in &b.params {
        q = match p {
            Param::Int(i) => q.bind(*i),
            Param::Text(s) => q.bind(s.as_str()),
        };
    }
    q
}

impl Postgres {
    pub(in crate::store) async fn cert_list(&self, b: Built) -> Result<Vec<CertListRow>> {
        let raw = bind(sqlx::query_as::<_, RawCertList>(&b.sql), &b).fetch_all(&self.pool).await?;
        raw.into_iter().map(CertListRow::try_from).collect()
    }

    pub(in crate::store) async fn count_of(&self, b: Built) -> Result<i64> {
        let (n,): (i64,) = bind(sqlx::query_as::<_, (i64,)>(&b.sql), &b).fetch_one(&self.pool).await?;
        Ok(n)
    }

    pub(in crate::store) async fn audit_list(&self, b: Built) -> Result<Vec<AuditRow>> {
        let raw = bind(sqlx::query_as::<_, RawAudit>(&b.sql), &b).fetch_all(&self.pool).await?;
        raw.into_iter().map(AuditRow::try_from).collect()
    }
}

//! The admin dashboard's listings on SQLite: the statements `store::admin` builds, bound here.

use rusqlite::{ToSql, types::ToSqlOutput};

use super::{Sqlite, optional, query};
use crate::store::{
    AuditRow, CertListRow, Result,
    admin::{Built, Param},
    rows::{RawAudit, RawCertList},
};

impl ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            Param::Int(i) => i.to_sql(),
            Param::Text(s) => s.to_sql(),
        }
    }
}

fn params(b: &Built) -> Vec<&dyn ToSql> {
    b.params.iter().map(|p| p as &dyn ToSql).collect()
}

impl Sqlite {
    pub(in crate::store) async fn cert_list(&self, b: Built) -> Result<Vec<CertListRow>> {
        self.read(move |c| query(c, &b.sql, &params(&b), RawCertList::from_lite))
            .await?
            .into_iter()
            .map(CertListRow::try_from)
            .collect()
    }

    pub(in crate::store) async fn count_of(&self, b: Built) -> Result<i64> {
        Ok(self.read(move |c| optional(c, &b.sql, &params(&b), |r| r.get::<_, i64>(0))).await?.unwrap_or(0))
    }

    pub(in crate::store) async fn audit_list(&self, b: Built) -> Result<Vec<AuditRow>> {
        self.read(move |c| query(c, &b.sql, &params(&b), RawAudit::from_lite))
            .await?
            .into_iter()
            .map(AuditRow::try_from)
            .collect()
    }
}

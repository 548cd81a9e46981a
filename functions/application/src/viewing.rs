//! Who may see a run, and finding it for them: the snapshot, the output files and the stream all
//! go through [`Viewing`], so the rule is written once.

use chrono::{DateTime, Utc};

use crate::auth::InvoiceClaims;
use crate::ports::{Blobs, Clock, DeliveryStore, RunStore, StoreError};
use spellcast_domain::ids::{CreditTxId, RunId, Slug, UserId};
use spellcast_domain::run::{FileBody, Run};

/// Who is asking about a run.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// A signed-in user (session token).
    User(UserId),
    /// The holder of the invoice that paid for a run (its expiry is judged per run).
    Invoice(InvoiceClaims),
}

/// How long after a run ends its invoice still opens it.
pub fn invoice_grace() -> chrono::Duration {
    chrono::Duration::hours(1)
}

/// Why a run was not shown.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// No such run (or, for the stream, not a run of that spell).
    #[error("no such run")]
    NotFound,
    /// The run has no such output file.
    #[error("no such output file")]
    NoSuchOutput,
    /// The run belongs to someone else.
    #[error("the run belongs to someone else")]
    Forbidden,
    /// The invoice no longer opens its run: the quote expired and the run ended over an hour ago.
    #[error("the invoice no longer opens its run")]
    InvoiceExpired,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Viewer {
    /// The user behind the viewer: the signed-in one, or the one the invoice was issued to.
    pub fn user(&self) -> &UserId {
        match self {
            Viewer::User(user) => user,
            Viewer::Invoice(claims) => &claims.sub,
        }
    }

    /// Whether this viewer may see `run` at `now`: its owner always; the holder of its own
    /// invoice while the quote is valid or until an hour after the run ended (so a run cast just
    /// before the quote expired can still be watched and resumed).
    pub fn may_see(&self, run: &Run, now: DateTime<Utc>) -> Result<(), ViewError> {
        match self {
            Viewer::User(user) if *user == run.user_id => Ok(()),
            Viewer::User(_) => Err(ViewError::Forbidden),
            Viewer::Invoice(claims) if claims.jti != run.invoice_id => Err(ViewError::Forbidden),
            Viewer::Invoice(claims) => {
                let quote_valid = now.timestamp() < claims.exp;
                let run_recent = run.finished_at.is_none_or(|f| now < f + invoice_grace());
                if quote_valid || run_recent {
                    Ok(())
                } else {
                    Err(ViewError::InvoiceExpired)
                }
            }
        }
    }
}

/// What viewing runs needs: the store and the time.
pub struct Viewing<'a> {
    /// Runs and their files.
    pub runs: &'a dyn RunStore,
    /// Webhook deliveries, for their attempts.
    pub deliveries: &'a dyn DeliveryStore,
    /// Large files.
    pub blobs: &'a dyn Blobs,
    /// The time.
    pub clock: &'a dyn Clock,
}

impl Viewing<'_> {
    /// A page of `user`'s own runs, newest first, after the run `before` when given; and the
    /// cursor of the next page, if there is one.
    pub async fn runs_of(
        &self,
        user: &spellcast_domain::ids::UserId,
        limit: usize,
        before: Option<&RunId>,
    ) -> Result<(Vec<Run>, Option<RunId>), StoreError> {
        let mut runs = self.runs.user_runs(user, limit + 1, before).await?;
        let next = if runs.len() > limit {
            runs.truncate(limit);
            runs.last().map(|r| r.run_id.clone())
        } else {
            None
        };
        Ok((runs, next))
    }

    /// Run `run_id`, if `viewer` may see it.
    pub async fn run(&self, viewer: &Viewer, run_id: &RunId) -> Result<Run, ViewError> {
        let run = self.runs.run(run_id).await?.ok_or(ViewError::NotFound)?;
        viewer.may_see(&run, self.clock.now())?;
        Ok(run)
    }

    /// Every attempt at run `run_id`'s webhook deliveries, oldest first, if `viewer` may see it
    /// (`GET /api/v1/runs/{runId}/webhooks`).
    pub async fn webhook_attempts(
        &self,
        viewer: &Viewer,
        run_id: &RunId,
    ) -> Result<Vec<spellcast_domain::webhooks::Attempt>, ViewError> {
        self.run(viewer, run_id).await?;
        let mut attempts: Vec<_> = self
            .deliveries
            .deliveries(run_id)
            .await?
            .into_iter()
            .flat_map(|d| d.attempts)
            .collect();
        attempts.sort_by(|a, b| (a.at, &a.webhook_id).cmp(&(b.at, &b.webhook_id)));
        Ok(attempts)
    }

    /// The run of spell `slug` paid by `credit_tx`, if `viewer` may see it.
    pub async fn run_by_credit_tx(
        &self,
        viewer: &Viewer,
        credit_tx: &CreditTxId,
        slug: &Slug,
    ) -> Result<Run, ViewError> {
        let run = self
            .runs
            .run_by_credit_tx(credit_tx)
            .await?
            .filter(|run| run.slug == *slug)
            .ok_or(ViewError::NotFound)?;
        viewer.may_see(&run, self.clock.now())?;
        Ok(run)
    }

    /// Output file `n` of run `run_id`, if `viewer` may see the run: its bytes, or a short-lived
    /// URL of the blob store to send the client to.
    pub async fn output(
        &self,
        viewer: &Viewer,
        run_id: &RunId,
        n: usize,
    ) -> Result<FileAnswer, ViewError> {
        let run = self.run(viewer, run_id).await?;
        let file = self
            .runs
            .output_file(&run.run_id, n)
            .await?
            .ok_or(ViewError::NoSuchOutput)?;
        let key = match file.body {
            FileBody::Inline(bytes) => {
                return Ok(FileAnswer::Bytes {
                    mime: file.mime,
                    bytes,
                })
            }
            FileBody::Blob(key) => key,
        };
        let served = crate::ports::Served::as_type(&file.mime);
        if let Some(url) = self.blobs.signed_url(&key, SIGNED_URL_TTL, &served).await? {
            return Ok(FileAnswer::Elsewhere(url));
        }
        match self.blobs.get(&key).await? {
            Some(bytes) => Ok(FileAnswer::Bytes {
                mime: file.mime,
                bytes,
            }),
            None => Err(ViewError::Store(StoreError::new(format!(
                "blob {key} of run {run_id} is missing"
            )))),
        }
    }
}

/// How long a signed URL to an output file works: long enough to start the download.
pub const SIGNED_URL_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// An output file as the client gets it.
#[derive(Debug, Clone, PartialEq)]
pub enum FileAnswer {
    /// Here are its bytes.
    Bytes {
        /// Media type.
        mime: String,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Fetch it from this short-lived URL.
    Elsewhere(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use spellcast_domain::testing::queued_run;

    fn invoice_of(run: &Run, exp: DateTime<Utc>) -> Viewer {
        Viewer::Invoice(InvoiceClaims {
            jti: run.invoice_id.clone(),
            sub: run.user_id.clone(),
            spell: run.slug.clone(),
            ver: 1,
            cost: run.cost_pts,
            asset: "PTS".into(),
            iat: 0,
            exp: exp.timestamp(),
            aud: String::new(),
            iss: String::new(),
        })
    }

    #[test]
    fn owners_see_their_runs_and_nobody_else_does() {
        let run = queued_run();
        let now = Utc::now();
        assert!(Viewer::User(run.user_id.clone()).may_see(&run, now).is_ok());
        assert!(matches!(
            Viewer::User("someone-else".into()).may_see(&run, now),
            Err(ViewError::Forbidden)
        ));
        let mut other = run.clone();
        other.invoice_id = "inv_other".into();
        assert!(matches!(
            invoice_of(&other, now + chrono::Duration::minutes(5)).may_see(&run, now),
            Err(ViewError::Forbidden)
        ));
    }

    #[test]
    fn an_invoice_opens_its_run_until_an_hour_after_it_ended() {
        let mut run = queued_run();
        let now = Utc::now();
        let expired = invoice_of(&run, now - chrono::Duration::minutes(1));
        assert!(expired.may_see(&run, now).is_ok(), "run still going");
        run.finished_at = Some(now - chrono::Duration::minutes(59));
        assert!(expired.may_see(&run, now).is_ok(), "ended 59 minutes ago");
        run.finished_at = Some(now - chrono::Duration::minutes(61));
        assert!(matches!(
            expired.may_see(&run, now),
            Err(ViewError::InvoiceExpired)
        ));
        let valid = invoice_of(&run, now + chrono::Duration::minutes(1));
        assert!(valid.may_see(&run, now).is_ok(), "quote still valid");
    }
}

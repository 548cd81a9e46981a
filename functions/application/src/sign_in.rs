//! Signing in: the user a session token names (ours, or the OpenID provider's), their welcome
//! grant on first sight, and the local server's demo sessions.

use chrono::Duration;

use crate::accounts::Accounts;
use crate::auth::{TokenError, TokenKeys};
use crate::oidc::OidcVerifier;
use crate::ports::{Clock, StoreError};
use spellcast_domain::ids::UserId;
use spellcast_domain::ledger::LedgerEntry;

/// What signing in needs: the keys, the provider, who was welcomed, balances and the time.
pub struct SignIn<'a> {
    /// Verifies and signs our session tokens.
    pub keys: &'a TokenKeys,
    /// The OpenID provider whose tokens sign users in, if one is configured.
    pub oidc: Option<&'a OidcVerifier>,
    /// Users known to have had their welcome grant.
    pub welcomed: &'a WelcomeBook,
    /// Where grants go.
    pub accounts: Accounts<'a>,
    /// The time.
    pub clock: &'a dyn Clock,
    /// Points granted once to each user on their first signed-in request (0: none).
    pub welcome_pts: i64,
    /// How long a demo session lasts.
    pub session_ttl: Duration,
}

/// A demo session: its token and the user's balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSession {
    /// The session token.
    pub token: String,
    /// The user's balance now.
    pub balance: i64,
}

impl SignIn<'_> {
    /// The user a session token names: the one place sessions are verified. Their welcome grant
    /// is made on the first request this process sees.
    pub async fn verify(&self, token: &str) -> Result<UserId, SignInError> {
        let user = match self.keys.verify_session(token) {
            Ok(claims) => claims.sub,
            Err(TokenError::Expired) => return Err(SignInError::Token(TokenError::Expired)),
            Err(TokenError::Invalid) => match self.oidc {
                Some(provider) => provider.verify(token).await?,
                None => return Err(SignInError::Token(TokenError::Invalid)),
            },
        };
        if self.welcome_pts > 0 && !self.welcomed.knows(&user) {
            self.accounts
                .welcome(&user, self.welcome_pts, self.clock.now())
                .await?;
            self.welcomed.remember(&user);
        }
        Ok(user)
    }

    /// A session for the demo user `user`, granted `grant_pts` first (the local server's
    /// `--unsafe-demo-sessions` only: no entry point on AWS offers it).
    pub async fn demo_session(
        &self,
        user: &UserId,
        grant_pts: i64,
    ) -> Result<DemoSession, StoreError> {
        let now = self.clock.now();
        let balance = if grant_pts > 0 {
            let entry = LedgerEntry::grant(user, grant_pts, "demo", "dev-session", now);
            self.accounts.ledger.grant(entry).await?
        } else {
            self.accounts.balance(user).await?
        };
        Ok(DemoSession {
            token: self.keys.session(user, now, now + self.session_ttl),
            balance,
        })
    }
}

/// Why a request is not signed in.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The token is not good.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The welcome grant could not be recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The users this process has seen welcomed, so a signed-in request costs no store write. Bounded:
/// forgetting only costs one more (idempotent) write.
#[derive(Default)]
pub struct WelcomeBook(std::sync::Mutex<std::collections::HashSet<UserId>>);

impl WelcomeBook {
    const MOST: usize = 100_000;

    fn knows(&self, user: &UserId) -> bool {
        self.0.lock().is_ok_and(|set| set.contains(user))
    }

    fn remember(&self, user: &UserId) {
        if let Ok(mut set) = self.0.lock() {
            if set.len() >= Self::MOST {
                set.clear();
            }
            set.insert(user.clone());
        }
    }
}

//! The admin Lambda: an administrator's grants (POST /api/v1/admin/grants, SPEC §9.2). Its own
//! function behind its own Function URL with `AuthType: AWS_IAM`: only callers whose IAM policy
//! allows `lambda:InvokeFunctionUrl` on it reach it, each signing with SigV4; the IAM principal
//! that signed is the grantor in the ledger. Not routed through CloudFront or API Gateway.

use std::sync::Arc;

use spellcast_lambda::{endpoints, serve, start, Error, NoBlobs, NoEvents, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let app = start.app(Arc::new(NoEvents), Arc::new(NoBlobs), Toolbox::default())?;
    serve(app, &[&endpoints::ADMIN_GRANTS]).await
}

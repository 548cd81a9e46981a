//! The `invoice` Lambda: POST /api/v1/payments/invoice, a binding quote.

use spellcast_lambda::{serve, start, EndpointKind, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let app = start().await?;
    serve(app, &[EndpointKind::Invoice]).await
}

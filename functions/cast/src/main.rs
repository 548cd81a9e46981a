//! The `cast` Lambda: POST /api/v1/spells/cast, pays an invoice and queues the run; and POST
//! /api/v1/uploads, where to PUT a file for a cast's file input (an S3 presigned URL).

use spellcast_lambda::{endpoints, serve, start, Error, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let bus = start.events();
    // Uploads: presigned PUTs, and the cast's look at an upload's first bytes.
    let blobs = start.blobs()?;
    let app = start.app(bus, blobs, Toolbox::default())?;
    serve(app, &[&endpoints::CAST, &endpoints::UPLOADS]).await
}

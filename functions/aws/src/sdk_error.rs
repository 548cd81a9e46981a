//! AWS SDK errors as store errors, for every client of this crate (DynamoDB, S3): one rule for
//! what is worth retrying later.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use spellcast_application::ports::StoreError;

/// An SDK error as a store error: a timeout, a throttle, a connection failure or a server-side
/// error is "unavailable" (the client may retry), anything else a failure.
pub(crate) fn store_error<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let message = format!("{}", DisplayErrorContext(&e));
    if is_transient(&e) {
        StoreError::unavailable(message)
    } else {
        StoreError::new(message)
    }
}

/// Whether an error says nothing about the request, only about the service right now.
pub(crate) fn is_transient<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(
        e,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    ) || matches!(
        e.code(),
        Some(
            // DynamoDB
            "ThrottlingException"
                | "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "InternalServerError"
                | "TransactionInProgressException"
                // S3
                | "SlowDown"
                | "InternalError"
                | "RequestTimeout"
                // both
                | "ServiceUnavailable"
        )
    )
}

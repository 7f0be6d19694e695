//! Conversion between the served Tenant versions, for the conversion webhook.
//!
//! A stub that refuses every review, so the webhook server builds; the real conversion replaces
//! this file.

use kube::core::Status;
use kube::core::conversion::{ConversionRequest, ConversionResponse, ConversionReview};

/// Answers a ConversionReview: the converted objects, or a failure saying why. Never panics.
pub fn review(review: ConversionReview) -> ConversionReview {
    let status = Status::failure("conversion is not implemented yet", "NotImplemented");
    match ConversionRequest::from_review(review) {
        Ok(request) => ConversionResponse::for_request(request).failure(status).into_review(),
        Err(error) => ConversionResponse::invalid(Status::failure(&error.to_string(), "BadRequest")).into_review(),
    }
}

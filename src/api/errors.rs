//! The one table from domain errors to gRPC status codes and HTTP statuses,
//! shared by both transports (and the code names clients print).

use axum::http::StatusCode;
use tonic::{Code, Status};

use crate::domain::{Error, ErrorKind};

/// A domain error as a gRPC status.
pub fn status(error: Error) -> Status {
    Status::new(grpc_code(error.kind), error.message)
}

/// A status met while reading a client's stream (a message too large or
/// not protobuf), as the domain error that ends the stream.
pub fn error_of_status(status: Status) -> Error {
    let kind = match status.code() {
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        Code::OutOfRange => ErrorKind::OutOfRange,
        Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        Code::Internal | Code::DataLoss | Code::Unknown => ErrorKind::Internal,
        _ => ErrorKind::Unavailable,
    };
    Error::new(kind, status.message().to_owned())
}

/// The gRPC code of a kind of domain error.
pub fn grpc_code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    }
}

/// Each gRPC code's name (as in `"code"` of HTTP errors) and HTTP status.
/// FAILED_PRECONDITION is 409: the session or agent is in the wrong state;
/// 412 is kept for its HTTP meaning, a failed conditional header.
const TABLE: [(Code, &str, StatusCode); 17] = [
    (Code::Ok, "OK", StatusCode::OK),
    (Code::Cancelled, "CANCELLED", StatusCode::REQUEST_TIMEOUT),
    (Code::Unknown, "UNKNOWN", StatusCode::INTERNAL_SERVER_ERROR),
    (Code::InvalidArgument, "INVALID_ARGUMENT", StatusCode::BAD_REQUEST),
    (Code::DeadlineExceeded, "DEADLINE_EXCEEDED", StatusCode::GATEWAY_TIMEOUT),
    (Code::NotFound, "NOT_FOUND", StatusCode::NOT_FOUND),
    (Code::AlreadyExists, "ALREADY_EXISTS", StatusCode::CONFLICT),
    (Code::PermissionDenied, "PERMISSION_DENIED", StatusCode::FORBIDDEN),
    (
        Code::ResourceExhausted,
        "RESOURCE_EXHAUSTED",
        StatusCode::TOO_MANY_REQUESTS,
    ),
    (Code::FailedPrecondition, "FAILED_PRECONDITION", StatusCode::CONFLICT),
    (Code::Aborted, "ABORTED", StatusCode::CONFLICT),
    (Code::OutOfRange, "OUT_OF_RANGE", StatusCode::BAD_REQUEST),
    (Code::Unimplemented, "UNIMPLEMENTED", StatusCode::NOT_IMPLEMENTED),
    (Code::Internal, "INTERNAL", StatusCode::INTERNAL_SERVER_ERROR),
    (Code::Unavailable, "UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
    (Code::DataLoss, "DATA_LOSS", StatusCode::INTERNAL_SERVER_ERROR),
    (Code::Unauthenticated, "UNAUTHENTICATED", StatusCode::UNAUTHORIZED),
];

fn row(code: Code) -> (&'static str, StatusCode) {
    TABLE
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(("UNKNOWN", StatusCode::INTERNAL_SERVER_ERROR), |(_, name, http)| {
            (*name, *http)
        })
}

pub fn code_name(code: Code) -> &'static str {
    row(code).0
}

pub fn http_status(code: Code) -> StatusCode {
    row(code).1
}

/// The code name for an HTTP error status made outside our handlers (a
/// rejection by axum or a layer).
pub fn code_of_http_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 | 501 => "UNIMPLEMENTED",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 => "ABORTED",
        412 => "FAILED_PRECONDITION",
        413 | 429 | 431 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        500..=599 => "INTERNAL",
        _ => "INVALID_ARGUMENT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_row() {
        for number in 0..=16 {
            let code = Code::from_i32(number);
            assert_eq!(TABLE.iter().filter(|(c, _, _)| *c == code).count(), 1, "{code:?}");
        }
        assert_eq!(http_status(status(Error::not_found("x")).code()), StatusCode::NOT_FOUND);
        assert_eq!(code_name(Code::FailedPrecondition), "FAILED_PRECONDITION");
        assert_eq!(
            code_of_http_status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            "INVALID_ARGUMENT"
        );
        assert_eq!(code_of_http_status(StatusCode::PAYLOAD_TOO_LARGE), "RESOURCE_EXHAUSTED");
    }
}

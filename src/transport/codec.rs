//! The gRPC codec of every agentbus service: prost's, except that a request
//! that does not decode is the client's fault. tonic-prost answers INTERNAL
//! for any decode error, including valid protobuf nested deeper than prost's
//! recursion limit; we answer INVALID_ARGUMENT with prost's description,
//! which names the message and field where decoding stopped.
//! [`request_errors`] does the same for the errors tonic raises while
//! reading a request's frames, before any codec runs.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::api::convert::MAX_JSON_DEPTH;

#[derive(Debug, Clone, Default)]
pub struct AgentbusCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Codec for AgentbusCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(ProstCodec::<T, U>::default().decoder())
    }
}

#[derive(Debug, Clone)]
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| invalid_request(status.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// prost describes a decode error innermost field first:
/// `failed to decode Protobuf message: Value.kind: Struct.fields:
/// CreateSessionRequest.shared_context: recursion limit reached`. We name
/// the fields outermost first (only the outermost for deep nesting).
fn invalid_request(decode_error: &str) -> Status {
    let detail = decode_error
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(decode_error);
    // Each field is `Message.field: `; the description follows.
    let mut fields = Vec::new();
    let mut reason = detail;
    while let Some((field, rest)) = reason.split_once(": ")
        && !field.is_empty()
        && field.split('.').count() == 2
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        fields.push(field);
        reason = rest;
    }
    if reason == "recursion limit reached" {
        let field = fields.last().copied().unwrap_or("request");
        return Status::invalid_argument(format!(
            "{field}: nested too deeply to decode; JSON values (payload, shared_context, metadata) \
             may nest at most {MAX_JSON_DEPTH} levels"
        ));
    }
    let path: Vec<&str> = fields.iter().rev().copied().collect();
    let at = if path.is_empty() {
        "request".to_owned()
    } else {
        path.join(" > ")
    };
    Status::invalid_argument(format!("{at}: not valid protobuf: {reason}"))
}

/// The messages of tonic's request-framing errors (a bad compression flag,
/// a body that ends inside a frame, a body that does not decompress), which
/// tonic reports as INTERNAL. All our RPCs take one request message, so
/// these arrive before any handler runs, as a trailers-only answer.
const FRAMING_ERRORS: [&str; 3] = [
    "protocol error:",
    "Unexpected EOF decoding stream",
    "Error decompressing",
];

/// For the gRPC routes' answers (a `map_response` layer, so no future is
/// boxed per call): a request that tonic could not read is INVALID_ARGUMENT,
/// so no input a client sends can produce INTERNAL.
pub fn request_errors(mut response: axum::response::Response) -> axum::response::Response {
    let internal = response.headers().get("grpc-status").is_some_and(|code| code == "13");
    let from_framing = internal
        && matches!(Status::from_header_map(response.headers()), Some(status)
            if FRAMING_ERRORS.iter().any(|prefix| status.message().starts_with(prefix)));
    if from_framing {
        response
            .headers_mut()
            .insert("grpc-status", axum::http::HeaderValue::from_static("3"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_name_the_outermost_field() {
        let deep = invalid_request(
            "failed to decode Protobuf message: Struct.fields: Value.kind: \
             CreateSessionRequest.shared_context: recursion limit reached",
        );
        assert_eq!(deep.code(), tonic::Code::InvalidArgument);
        assert!(
            deep.message()
                .starts_with("CreateSessionRequest.shared_context: nested too deeply"),
            "{}",
            deep.message()
        );
        let wire = invalid_request(
            "failed to decode Protobuf message: Message.payload: SendMessageRequest.message: invalid wire type value: 7",
        );
        assert_eq!(
            wire.message(),
            "SendMessageRequest.message > Message.payload: not valid protobuf: invalid wire type value: 7"
        );
        let bare = invalid_request("failed to decode Protobuf message: buffer underflow");
        assert_eq!(bare.message(), "request: not valid protobuf: buffer underflow");
    }
}

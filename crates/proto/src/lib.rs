//! wxlogin's gRPC contracts, generated from `proto/` at build time.
//!
//! Every crate that speaks gRPC goes through this one; nothing else compiles
//! the protos. Besides the generated code it owns the error reasons that
//! services put into `google.rpc.ErrorInfo` so that callers can tell, say, an
//! invalid code from a used one without parsing messages.

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("wxlogin.auth.v1");
    }
}

pub mod user {
    pub mod v1 {
        tonic::include_proto!("wxlogin.user.v1");
    }
}

pub mod codec;
pub mod fields;
pub mod reason;

//! wxlogin's contracts: the gRPC code generated from `proto/` at build
//! time, and what both sides of a wire agree on besides it.
//!
//! Every crate that speaks gRPC goes through this one; nothing else compiles
//! the protos. Besides the generated code it owns the error reasons that
//! services put into `google.rpc.ErrorInfo` so that callers can tell, say, an
//! invalid code from a used one without parsing messages ([`reason`]), the
//! limits of the fields that cross the wire ([`fields`]), which internal
//! caller may make a call ([`caller`]), and the audit events that log
//! pipelines rely on ([`mod@audit`]). It holds no business logic.

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

pub mod audit;
pub mod caller;
pub mod codec;
pub mod fields;
pub mod reason;

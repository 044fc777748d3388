//! How our services call each other over gRPC: one way to open a channel,
//! one way to build a call with its deadline and the request id.

use std::{net::IpAddr, time::Duration};

use tonic::{
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

use crate::request_id;

/// A channel to `url` that connects on first use and reconnects by itself:
/// a caller starts (and reports not ready) while the service it calls is
/// still coming up. One channel per upstream and process, cloned per call.
pub fn lazy_channel(url: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// A call carrying `message`, with `deadline`, and the id of the request it
/// serves (when there is one) in the `x-request-id` metadata.
pub fn call<T>(message: T, request_id: Option<&str>, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    if let Some(id) = request_id.and_then(|id| MetadataValue::try_from(id).ok()) {
        request.metadata_mut().insert(request_id::HEADER, id);
    }
    request
}

/// The gRPC metadata in which the gateway tells auth which client address
/// a login comes from (auth's per-address budgets key on it).
pub const CLIENT_IP: &str = "x-client-ip";

/// Tells the callee that `request` serves the client at `ip`.
pub fn set_client_ip<T>(request: &mut tonic::Request<T>, ip: IpAddr) {
    if let Ok(value) = MetadataValue::try_from(ip.to_string()) {
        request.metadata_mut().insert(CLIENT_IP, value);
    }
}

/// The client address an incoming call carries, if any and well-formed.
pub fn client_ip_of<T>(request: &tonic::Request<T>) -> Option<IpAddr> {
    request
        .metadata()
        .get(CLIENT_IP)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The request id an incoming call carries.
pub fn request_id_of<T>(request: &tonic::Request<T>) -> Option<String> {
    let id = request.metadata().get(request_id::HEADER)?;
    id.to_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_carries_its_deadline_and_request_id() {
        let request = call((), Some("rid-1"), Duration::from_millis(1500));
        assert_eq!(request_id_of(&request).as_deref(), Some("rid-1"));
        assert_eq!(
            request
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok()),
            Some("1500000u")
        );
        let bare = call((), None, Duration::from_secs(1));
        assert_eq!(request_id_of(&bare), None);
    }

    #[test]
    fn a_call_carries_the_client_address() {
        let mut request = call((), None, Duration::from_secs(1));
        assert_eq!(client_ip_of(&request), None);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        set_client_ip(&mut request, ip);
        assert_eq!(client_ip_of(&request), Some(ip));
        request
            .metadata_mut()
            .insert(CLIENT_IP, MetadataValue::from_static("not an address"));
        assert_eq!(client_ip_of(&request), None);
    }

    #[test]
    fn a_bad_url_is_refused() {
        assert!(lazy_channel("not a url").is_err());
    }
}

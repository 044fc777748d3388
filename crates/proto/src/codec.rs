//! The codec of every wxlogin RPC: prost's, with buffers sized for our
//! messages. tonic's default starts each call's encode and decode buffers
//! at 8 KiB, on both sides of a call; wxlogin's messages are a few hundred
//! bytes, so with a thousand logins in flight those buffers would be most of
//! the memory the services hold. The buffers still grow for a larger
//! message (a long list of users).

use tonic::codec::{BufferSettings, Codec as TonicCodec};
use tonic_prost::ProstCodec;

/// Where a call's encode and decode buffers start.
pub const BUFFER_START: usize = 1024;
/// tonic's default: how much a streaming encoder gathers before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_START, YIELD_THRESHOLD)
}

/// [`ProstCodec`] with [`BUFFER_START`]-byte buffers.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(ProstCodec::default())
    }
}

impl<T, U> TonicCodec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as TonicCodec>::Encoder;
    type Decoder = <ProstCodec<T, U> as TonicCodec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

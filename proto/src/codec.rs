//! The codec of every generated service and client: prost's, except that a message that does
//! not decode is the client's fault (`InvalidArgument`), not the server's (`Internal`, prost's
//! default).

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Prost encoding, strict decoding; see the module docs.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(PhantomData)
    }
}

/// Decodes with prost; a malformed message is `InvalidArgument`.
#[derive(Debug, Clone)]
pub struct StrictDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed request message: {e}")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_generated_code_uses_the_strict_codec() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/spear.v1.rs"));
        assert!(generated.contains("crate::codec::StrictCodec"));
        assert!(!generated.contains("tonic_prost::ProstCodec"));
    }
}

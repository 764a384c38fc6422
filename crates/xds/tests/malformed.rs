//! A client sending bytes that are not a DiscoveryRequest gets an error on
//! its own stream; other clients do not notice.
#![allow(clippy::expect_used)]

mod common;

use bytes::{Buf, BufMut};
use common::*;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use prost::Message;
use sextant_testkit::ads::{SotwClient, types};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends raw bytes as the request message; decodes responses normally.
#[derive(Default)]
struct RawCodec;
struct RawEncoder;
struct ResponseDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = DiscoveryResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = DiscoveryResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<DiscoveryResponse>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        DiscoveryResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

#[tokio::test]
async fn garbage_ends_only_the_sending_stream() {
    let h = start(vec![svc("a.svc", &["10.0.0.1"])]).await;
    let mut good = SotwClient::connect(h.addr, "good").await;
    good.subscribe(types::CDS, &[]).await;
    let cds = good.recv().await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", h.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    // Field 2 (node) claims 200 bytes but the message ends: not decodable.
    let garbage = vec![0x12, 0xc8, 0x01, 0x01];
    let path = http::uri::PathAndQuery::from_static(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
    );
    let requests = tokio_stream::iter(vec![garbage]);
    let result = grpc
        .streaming(tonic::Request::new(requests), path, RawCodec)
        .await;
    let status = match result {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            match stream.message().await {
                Err(status) => status,
                Ok(other) => panic!("expected an error, got {other:?}"),
            }
        }
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(
        status.message().contains("malformed xDS request"),
        "{status}"
    );

    // The well-behaved client carries on.
    good.subscribe(types::EDS, &[A_HTTP]).await;
    good.ack(&cds, &[]).await;
    let eds = good.recv().await;
    assert_eq!(eds.type_url, types::EDS);
}

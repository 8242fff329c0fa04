//! Service `probe.Probe` (see `probe.proto`): its messages, derived by hand with prost,
//! the server side on tonic's generic [`tonic::server::Grpc`], and a client on
//! [`tonic::client::Grpc`] over one HTTP/2 connection of our own. No code generation.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use hyper::client::conn::http2::SendRequest;
use hyper::http::uri::PathAndQuery;
use hyper::{HeaderMap, Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::Status;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic_prost::ProstCodec;

use crate::serve::{ProbeBody, box_body, header_map_json};

/// The unary method's path.
pub(crate) const WHO: &str = "/probe.Probe/Who";
/// The server-streaming method's path.
pub(crate) const COUNT: &str = "/probe.Probe/Count";
/// The most replies one `Count` call may ask for.
pub(crate) const MAX_COUNT: u32 = 1_000_000;

/// `Who`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WhoRequest {
    /// Any text; the reply carries it back.
    #[prost(string, tag = "1")]
    pub(crate) text: String,
}

/// `Who`'s reply.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WhoReply {
    /// The name the server was started with.
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    /// The request's text.
    #[prost(string, tag = "2")]
    pub(crate) text: String,
    /// Every request header as the server received it (`:authority` included; repeated
    /// headers joined with `, `).
    #[prost(btree_map = "string, string", tag = "3")]
    pub(crate) headers: BTreeMap<String, String>,
    /// The client's address as the server saw it (`ip:port`).
    #[prost(string, tag = "4")]
    pub(crate) peer: String,
}

/// `Count`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CountRequest {
    /// How many replies to stream.
    #[prost(uint32, tag = "1")]
    pub(crate) n: u32,
}

/// One of `Count`'s replies.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CountReply {
    /// The name the server was started with.
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    /// 0, 1, ..., n-1.
    #[prost(uint32, tag = "2")]
    pub(crate) i: u32,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `Who`, for one request: knows the server's name and the request's headers (tonic's
/// metadata drops some, so they are taken from the HTTP request before it).
struct Who {
    name: String,
    headers: BTreeMap<String, String>,
    peer: String,
}

impl tonic::server::UnaryService<WhoRequest> for Who {
    type Response = WhoReply;
    type Future = BoxFuture<Result<tonic::Response<WhoReply>, Status>>;

    fn call(&mut self, request: tonic::Request<WhoRequest>) -> Self::Future {
        let reply = WhoReply {
            name: self.name.clone(),
            text: request.into_inner().text,
            headers: std::mem::take(&mut self.headers),
            peer: self.peer.clone(),
        };
        Box::pin(async move { Ok(tonic::Response::new(reply)) })
    }
}

struct Count {
    name: String,
}

type CountStream = futures::stream::Iter<std::vec::IntoIter<Result<CountReply, Status>>>;

impl tonic::server::ServerStreamingService<CountRequest> for Count {
    type Response = CountReply;
    type ResponseStream = CountStream;
    type Future = BoxFuture<Result<tonic::Response<CountStream>, Status>>;

    fn call(&mut self, request: tonic::Request<CountRequest>) -> Self::Future {
        let n = request.into_inner().n;
        let name = self.name.clone();
        Box::pin(async move {
            if n > MAX_COUNT {
                return Err(Status::invalid_argument(format!(
                    "n = {n} is more than {MAX_COUNT}: ask for fewer replies"
                )));
            }
            let replies: Vec<_> = (0..n)
                .map(|i| {
                    Ok(CountReply {
                        name: name.clone(),
                        i,
                    })
                })
                .collect();
            Ok(tonic::Response::new(futures::stream::iter(replies)))
        })
    }
}

/// Whether `headers` mark a gRPC request (`content-type: application/grpc[+proto|...]`).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct == "application/grpc" || ct.starts_with("application/grpc+"))
}

/// Answers one gRPC request.
pub(crate) async fn serve(
    name: &str,
    peer: std::net::SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<ProbeBody>, Infallible> {
    let headers = header_map_json(req.uri(), req.headers());
    let response = match req.uri().path() {
        WHO => {
            let svc = Who {
                name: name.to_owned(),
                headers,
                peer: peer.to_string(),
            };
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<WhoReply, WhoRequest>::default());
            grpc.unary(svc, req).await
        }
        COUNT => {
            let svc = Count {
                name: name.to_owned(),
            };
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<CountReply, CountRequest>::default());
            grpc.server_streaming(svc, req).await
        }
        other => {
            let mut resp =
                Status::unimplemented(format!("kt-probe serves {WHO} and {COUNT}, not {other}"))
                    .into_http::<tonic::body::Body>();
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/grpc"),
            );
            resp
        }
    };
    Ok(response.map(box_body))
}

/// One HTTP/2 connection as a tower service, for [`tonic::client::Grpc`].
#[derive(Clone)]
struct H2Conn(SendRequest<tonic::body::Body>);

impl tower::Service<Request<tonic::body::Body>> for H2Conn {
    type Response = Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// A gRPC client of `probe.Probe` on one HTTP/2 (h2c) connection.
pub(crate) struct Client {
    grpc: tonic::client::Grpc<H2Conn>,
    headers: Vec<(String, String)>,
    _conn: crate::AbortOnDrop,
}

impl Client {
    /// Connects to `addr` (`host:port`) and sends every call with `headers` as metadata.
    pub(crate) async fn connect(addr: &str, headers: Vec<(String, String)>) -> Result<Client> {
        let origin: Uri = format!("http://{addr}")
            .parse()
            .with_context(|| format!("bad --addr `{addr}`: expected host:port"))?;
        for (k, v) in &headers {
            MetadataKey::<tonic::metadata::Ascii>::from_bytes(k.as_bytes())
                .with_context(|| format!("bad gRPC metadata name `{k}`"))?;
            MetadataValue::<tonic::metadata::Ascii>::try_from(v.as_str())
                .with_context(|| format!("bad gRPC metadata value `{v}` for `{k}`"))?;
        }
        let tcp = crate::client::connect_tcp(addr).await?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tcp))
            .await
            .with_context(|| format!("HTTP/2 handshake with {addr}"))?;
        let conn = crate::AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        Ok(Client {
            grpc: tonic::client::Grpc::with_origin(H2Conn(send), origin),
            headers,
            _conn: conn,
        })
    }

    fn request<M>(&self, message: M) -> tonic::Request<M> {
        let mut req = tonic::Request::new(message);
        for (k, v) in &self.headers {
            // Checked in `connect`.
            if let (Ok(k), Ok(v)) = (
                MetadataKey::<tonic::metadata::Ascii>::from_bytes(k.as_bytes()),
                MetadataValue::try_from(v.as_str()),
            ) {
                req.metadata_mut().append(k, v);
            }
        }
        req
    }

    /// Calls `Who`.
    pub(crate) async fn who(&mut self, text: &str) -> Result<WhoReply, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection: {e}")))?;
        let req = self.request(WhoRequest {
            text: text.to_owned(),
        });
        let resp = self
            .grpc
            .unary(
                req,
                PathAndQuery::from_static(WHO),
                ProstCodec::<WhoRequest, WhoReply>::default(),
            )
            .await?;
        Ok(resp.into_inner())
    }

    /// Calls `Count` and hands each reply to `each` as it arrives; returns how many came.
    pub(crate) async fn count(
        &mut self,
        n: u32,
        mut each: impl FnMut(&CountReply),
    ) -> Result<u32, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection: {e}")))?;
        let req = self.request(CountRequest { n });
        let resp = self
            .grpc
            .server_streaming(
                req,
                PathAndQuery::from_static(COUNT),
                ProstCodec::<CountRequest, CountReply>::default(),
            )
            .await?;
        let mut stream = resp.into_inner();
        let mut got = 0u32;
        while let Some(reply) = stream.message().await? {
            each(&reply);
            got += 1;
        }
        Ok(got)
    }
}

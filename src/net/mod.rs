//! Streams (TCP, unix, TLS either way) and packet I/O over them.
//!
//! The handshake is read with exact reads (header, then payload) so that no
//! TLS bytes that follow an SSLRequest end up in a framing buffer; after the
//! handshake, reads go through a buffer that the relay parses in place.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::protocol::frame::{self, FrameError, Logical, HEADER_LEN, MAX_PAYLOAD};

/// A byte stream toward a client or a server.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Tcp(_) => "Stream::Tcp",
            Stream::Unix(_) => "Stream::Unix",
            Stream::ServerTls(_) => "Stream::ServerTls",
            Stream::ClientTls(_) => "Stream::ClientTls",
        })
    }
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::ServerTls(_) | Stream::ClientTls(_))
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
            Stream::ServerTls($s) => $e,
            Stream::ClientTls($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::ServerTls(s) => s.is_write_vectored(),
            Stream::ClientTls(s) => s.is_write_vectored(),
        }
    }
}

/// Errors reading packets.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("connection closed in the middle of a packet")]
    Truncated,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Initial capacity of a connection's read buffer.
const READ_BUF: usize = 4 * 1024;
/// Largest read size the adaptive read buffer grows to.
const MAX_READ: usize = 256 * 1024;

/// A stream with a read buffer, read and written in MySQL packets.
pub struct PacketConn {
    pub stream: Stream,
    pub rbuf: BytesMut,
    wbuf: BytesMut,
    /// Size of the next read: doubles while reads fill the buffer (big
    /// results), back to small when the connection goes idle.
    read_hint: usize,
    /// Buffers were used since the last `shrink_idle`.
    buffers_used: bool,
}

impl std::fmt::Debug for PacketConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketConn")
            .field("stream", &self.stream)
            .finish()
    }
}

impl PacketConn {
    pub fn new(stream: Stream) -> PacketConn {
        PacketConn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            read_hint: READ_BUF,
            buffers_used: false,
        }
    }

    /// Whether the connection holds buffer memory that `shrink_idle` frees.
    pub fn holds_buffers(&self) -> bool {
        self.buffers_used
    }

    /// Gives the read and write buffers back when the connection is idle
    /// (thousands of idle sessions must cost little memory).
    pub fn shrink_idle(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.capacity() > 0 {
            self.wbuf = BytesMut::new();
        }
        self.read_hint = READ_BUF;
        self.buffers_used = !self.rbuf.is_empty();
    }

    /// Reads more bytes into the buffer. `Ok(0)` is end of stream.
    /// Cancel safe.
    pub async fn fill(&mut self) -> io::Result<usize> {
        self.buffers_used = true;
        let space = self.rbuf.capacity() - self.rbuf.len();
        if space < 1024 {
            self.rbuf.reserve(self.read_hint);
        }
        let space = self.rbuf.capacity() - self.rbuf.len();
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == space && self.read_hint < MAX_READ {
            self.read_hint *= 2;
        }
        Ok(n)
    }

    /// Reads one logical packet through the buffer.
    pub async fn read_logical(
        &mut self,
        expected_seq: Option<u8>,
        max: usize,
    ) -> Result<Logical, ReadError> {
        loop {
            if let Some(l) = frame::take_logical(&mut self.rbuf, expected_seq, max)? {
                // Do not keep a huge buffer around after a big packet.
                if self.rbuf.is_empty() && self.rbuf.capacity() > 4 * MAX_PAYLOAD / 16 {
                    self.rbuf = BytesMut::new();
                }
                return Ok(l);
            }
            if self.fill().await? == 0 {
                return Err(if self.rbuf.is_empty() {
                    ReadError::Closed
                } else {
                    ReadError::Truncated
                });
            }
        }
    }

    /// Reads one physical packet with exact reads, bypassing the buffer
    /// (handshake phase: nothing past the packet is consumed).
    pub async fn read_exact_packet(&mut self, max: usize) -> Result<(u8, Vec<u8>), ReadError> {
        debug_assert!(self.rbuf.is_empty());
        let mut h = [0u8; HEADER_LEN];
        match self.stream.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
            Err(e) => return Err(e.into()),
        }
        let hdr = frame::parse_header(&h).ok_or(ReadError::Truncated)?;
        if hdr.len > max {
            return Err(FrameError::TooLarge { len: hdr.len, max }.into());
        }
        let mut p = vec![0u8; hdr.len];
        match self.stream.read_exact(&mut p).await {
            Ok(_) => Ok((hdr.seq, p)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ReadError::Truncated),
            Err(e) => Err(e.into()),
        }
    }

    /// Frames and writes one logical packet; returns the next sequence id.
    pub async fn write_packet(&mut self, seq: u8, payload: &[u8]) -> io::Result<u8> {
        let mut s = seq;
        self.buffers_used = true;
        self.wbuf.clear();
        frame::put_packet(&mut self.wbuf, &mut s, payload);
        self.stream.write_all(&self.wbuf).await?;
        self.stream.flush().await?;
        if self.wbuf.capacity() > 1 << 20 {
            self.wbuf = BytesMut::new();
        }
        Ok(s)
    }

    /// Writes raw bytes (already framed).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// An upstream address: TCP or unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAddr {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl UpstreamAddr {
    /// Parses `host:port`, `[v6]:port` or `unix:/path`.
    pub fn parse(s: &str) -> Option<UpstreamAddr> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return None;
            }
            return Some(UpstreamAddr::Unix(PathBuf::from(p)));
        }
        let (host, port) = s.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return None;
        }
        Some(UpstreamAddr::Tcp {
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    }

    pub fn host(&self) -> &str {
        match self {
            UpstreamAddr::Tcp { host, .. } => host,
            UpstreamAddr::Unix(_) => "localhost",
        }
    }
}

impl std::fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            UpstreamAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Opens a plain stream to the upstream.
pub async fn connect(addr: &UpstreamAddr) -> io::Result<Stream> {
    match addr {
        UpstreamAddr::Tcp { host, port } => {
            let s = TcpStream::connect((host.as_str(), *port)).await?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        }
        UpstreamAddr::Unix(p) => Ok(Stream::Unix(UnixStream::connect(p).await?)),
    }
}

/// TLS configuration toward clients, loaded from PEM files.
pub fn server_tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(Arc::new(cfg))
}

pub mod upstream_tls;

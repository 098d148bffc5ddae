//! Downloads of dataset archives and pretrained weights: HTTP with resume, checksums, safe
//! unpacking, the catalogue of official archives and the Hugging Face hub. Owns only files it
//! downloads or unpacks; it must not read datasets or touch the store.
//!
//! Every download streams into `<name>.part`, resumes with an HTTP `Range` request after an
//! interruption, is verified (md5 or sha256) before it is renamed into place, and is retried a
//! bounded number of times with exponential back-off. Proxies come from the standard
//! `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` variables.
use std::path::PathBuf;
use std::time::Duration;

mod catalogue;
mod download;
mod hub;
mod plan;
mod unpack;
mod vtab1k;

pub use catalogue::{archive_for, mirrored, Archive, ArchiveKind, DATA_MIRROR_ENV};
pub use download::download;
pub use hub::{hub_url, weights_sha256, WeightsRef};
pub use plan::{fetch_archive, fetch_weights, missing, Missing};
pub use unpack::{unpack, UnpackLimits};
pub use vtab1k::{install_vtab1k, Vtab1kArchive};

/// A file's expected digest (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    Md5(String),
    Sha256(String),
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Checksum::Md5(h) => write!(f, "md5 {h}"),
            Checksum::Sha256(h) => write!(f, "sha256 {h}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: HTTP {status}{hint}")]
    Http {
        url: String,
        status: u16,
        hint: String,
    },
    #[error(
        "{url}: gave up after {attempts} attempts ({reason}). Without a network, download it \
         elsewhere and place it by hand: {manual}"
    )]
    Network {
        url: String,
        attempts: u32,
        reason: String,
        manual: String,
    },
    #[error(
        "{url}: checksum mismatch for {file}: expected {expected}, got {got}; the download was \
         deleted (a mirror serving another file, or a corrupted transfer: rerun fetch)"
    )]
    Checksum {
        url: String,
        file: PathBuf,
        expected: Checksum,
        got: String,
    },
    #[error("unsafe archive {archive}: entry `{entry}` {why}; nothing was unpacked")]
    UnsafeEntry {
        archive: PathBuf,
        entry: String,
        why: &'static str,
    },
    #[error(
        "archive {archive} refused: {what} (raise the limit with `vtab-orch fetch {flag}` if \
         you trust it); nothing was unpacked"
    )]
    Limit {
        archive: PathBuf,
        what: String,
        flag: String,
    },
    #[error(
        "{url}: refused: {what} (raise the limit with `vtab-orch fetch --max-download-gib` if \
         you trust it); the partial download was deleted"
    )]
    TooLarge { url: String, what: String },
    #[error("archive {archive}: {problem}; nothing was unpacked")]
    BadArchive { archive: PathBuf, problem: String },
    /// The io error is in the message, not chained as a source: callers print the chain, and
    /// it would appear twice.
    #[error("{}: {err}", .path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0}")]
    Unsupported(String),
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FetchError {
    let path = path.into();
    move |err| FetchError::Io { path, err }
}

/// Reports a download's progress (the CLI draws a bar; tests and scripts stay quiet).
pub trait Progress {
    /// A download of `name` starts (or resumes at `done` bytes) with `total` bytes if known.
    fn begin(&mut self, name: &str, done: u64, total: Option<u64>);
    fn advance(&mut self, bytes: u64);
    fn end(&mut self);
}

/// No progress output.
pub struct Quiet;

impl Progress for Quiet {
    fn begin(&mut self, _: &str, _: u64, _: Option<u64>) {}
    fn advance(&mut self, _: u64) {}
    fn end(&mut self) {}
}

/// The HTTP client and its retry policy.
pub struct Client {
    pub(crate) agent: ureq::Agent,
    /// Same settings, but redirects are not followed (to read the hub's `X-Linked-Etag`).
    pub(crate) no_redirect: ureq::Agent,
    /// Attempts per file (first try included).
    pub attempts: u32,
    /// First back-off delay; doubled after each failed attempt.
    pub backoff: Duration,
    /// The most bytes one download may have when the server does not say (`Content-Length`)
    /// or says more; a body longer than its `Content-Length` is refused too.
    pub max_download_bytes: u64,
    /// What one archive may unpack to.
    pub unpack_limits: UnpackLimits,
}

impl Client {
    /// Proxies from the environment, 30 s connect and read-stall timeouts, 5 attempts.
    pub fn new() -> Client {
        let agent = |redirects: u32| -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .proxy(ureq::Proxy::try_from_env())
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_body(None)
                .timeout_recv_response(Some(Duration::from_secs(60)))
                .max_redirects(redirects)
                .user_agent(concat!("vtab-orch/", env!("CARGO_PKG_VERSION")))
                .build()
                .into()
        };
        Client {
            agent: agent(10),
            no_redirect: agent(0),
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_download_bytes: 64 << 30,
            unpack_limits: UnpackLimits::default(),
        }
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

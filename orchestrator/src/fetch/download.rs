//! One verified, resumable HTTP download: `<dest>.part`, `Range` resume, bounded retries with
//! back-off, checksum before an atomic rename. Owns only `dest` and its `.part` file.
use super::{io_err, Checksum, Client, FetchError, Progress};
use md5::Md5;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What one attempt ended with.
enum Attempt {
    /// The body was read to its end.
    Complete,
    /// Worth another try (connection dropped, 5xx, short body): the reason.
    Retry(String),
}

/// Downloads `url` to `dest`, verified against `sum`. A `dest` that already matches is kept;
/// one that does not is an error (it is someone's file). `headers` go with every request.
/// `manual` says how to place the file by hand, for the error when the network is missing.
pub fn download(
    client: &Client,
    url: &str,
    dest: &Path,
    sum: &Checksum,
    headers: &[(String, String)],
    manual: &str,
    progress: &mut dyn Progress,
) -> Result<(), FetchError> {
    if dest.is_file() {
        let got = digest(dest, sum)?;
        return if got == hex(sum) {
            Ok(())
        } else {
            // Left from another run or placed by hand, and not the file: the error says it is
            // deleted, and a rerun downloads it again.
            let _ = fs::remove_file(dest);
            Err(FetchError::Checksum {
                url: url.to_string(),
                file: dest.to_path_buf(),
                expected: sum.clone(),
                got,
            })
        };
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let part = part_path(dest);
    let mut last = String::new();
    for attempt in 0..client.attempts.max(1) {
        if attempt > 0 {
            std::thread::sleep(client.backoff * 2u32.saturating_pow(attempt - 1));
        }
        match attempt_once(client, url, &part, headers, progress)? {
            Attempt::Complete => return finish(url, &part, dest, sum),
            Attempt::Retry(why) => last = why,
        }
    }
    Err(FetchError::Network {
        url: url.to_string(),
        attempts: client.attempts.max(1),
        reason: last,
        manual: manual.to_string(),
    })
}

/// `<dest>.part`.
pub(crate) fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

fn attempt_once(
    client: &Client,
    url: &str,
    part: &Path,
    headers: &[(String, String)],
    progress: &mut dyn Progress,
) -> Result<Attempt, FetchError> {
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = client.agent.get(url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(e) => return Ok(Attempt::Retry(e.to_string())),
    };
    let status = resp.status().as_u16();
    let append = match status {
        206 => true,
        200 => false,
        // Everything is already here: let the checksum decide.
        416 if have > 0 => return Ok(Attempt::Complete),
        500..=599 | 408 | 429 => return Ok(Attempt::Retry(format!("HTTP {status}"))),
        _ => {
            return Err(FetchError::Http {
                url: url.to_string(),
                status,
                hint: match status {
                    401 | 403 => {
                        " (access denied: set HF_TOKEN for a gated or private hub file)".into()
                    }
                    404 => " (not found: check the name, or the mirror's layout)".into(),
                    _ => String::new(),
                },
            })
        }
    };
    let length = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let start = if append { have } else { 0 };
    // The most this file may have: what the server announced, never more than the client's cap.
    let cap = length.map_or(client.max_download_bytes, |l| {
        (start + l).min(client.max_download_bytes)
    });
    let too_large = |what: String| {
        let _ = fs::remove_file(part);
        Err(FetchError::TooLarge {
            url: url.to_string(),
            what,
        })
    };
    if let Some(l) = length.filter(|l| start + l > client.max_download_bytes) {
        return too_large(format!(
            "it announces {} bytes, more than the limit of {}",
            start + l,
            client.max_download_bytes
        ));
    }
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .map_err(io_err(part))?;
    let name = part.file_name().unwrap_or_default().to_string_lossy();
    progress.begin(
        name.trim_end_matches(".part"),
        start,
        length.map(|l| l + start),
    );
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    let outcome = loop {
        match body.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => {
                if start + got + n as u64 > cap {
                    drop(file);
                    progress.end();
                    return too_large(format!(
                        "the body goes past {cap} bytes (Content-Length {length:?}, limit {})",
                        client.max_download_bytes
                    ));
                }
                file.write_all(&buf[..n]).map_err(io_err(part))?;
                got += n as u64;
                progress.advance(n as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Some(e.to_string()),
        }
    };
    file.flush().map_err(io_err(part))?;
    progress.end();
    Ok(match (outcome, length) {
        (Some(e), _) => Attempt::Retry(format!("connection lost after {got} bytes: {e}")),
        (None, Some(l)) if got < l => {
            Attempt::Retry(format!("connection closed after {got} of {l} bytes"))
        }
        _ => Attempt::Complete,
    })
}

/// Verifies the finished `.part` and renames it to `dest`; a mismatch deletes it.
fn finish(url: &str, part: &Path, dest: &Path, sum: &Checksum) -> Result<(), FetchError> {
    let got = digest(part, sum)?;
    if got != hex(sum) {
        let _ = fs::remove_file(part);
        return Err(FetchError::Checksum {
            url: url.to_string(),
            file: dest.to_path_buf(),
            expected: sum.clone(),
            got,
        });
    }
    fs::rename(part, dest).map_err(io_err(dest))
}

fn hex(sum: &Checksum) -> String {
    match sum {
        Checksum::Md5(h) | Checksum::Sha256(h) => h.to_ascii_lowercase(),
    }
}

/// The file's digest in `sum`'s algorithm, lower-case hex.
pub(crate) fn digest(path: &Path, sum: &Checksum) -> Result<String, FetchError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut md5 = Md5::new();
    let mut sha = Sha256::new();
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        match sum {
            Checksum::Md5(_) => md5.update(&buf[..n]),
            Checksum::Sha256(_) => sha.update(&buf[..n]),
        }
    }
    let bytes: Vec<u8> = match sum {
        Checksum::Md5(_) => md5.finalize().to_vec(),
        Checksum::Sha256(_) => sha.finalize().to_vec(),
    };
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

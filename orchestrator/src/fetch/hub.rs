//! timm checkpoints on the Hugging Face hub: the URL for a name and tag, and the sha256 the hub
//! publishes for `model.safetensors`. Owns only these requests; it must not write files.
use super::{Client, FetchError};

/// A timm checkpoint: `vit_base_patch16_224` + `orig_in21k`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsRef {
    pub name: String,
    pub tag: String,
}

impl WeightsRef {
    /// From a weights file named `<timm name>.<tag>.safetensors` (the suites' convention).
    pub fn from_file_name(file: &str) -> Option<WeightsRef> {
        let stem = file.strip_suffix(".safetensors")?;
        let (name, tag) = stem.split_once('.')?;
        (!name.is_empty() && !tag.is_empty()).then(|| WeightsRef {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

/// The hub endpoint: `HF_ENDPOINT` (the hub's own convention) or https://huggingface.co.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into())
        .trim_end_matches('/')
        .to_string()
}

/// `<endpoint>/timm/<name>.<tag>/resolve/main/model.safetensors`.
pub fn hub_url(w: &WeightsRef) -> String {
    format!(
        "{}/timm/{}.{}/resolve/main/model.safetensors",
        endpoint(),
        w.name,
        w.tag
    )
}

/// `Authorization` from `HF_TOKEN`, where set.
pub fn auth_headers() -> Vec<(String, String)> {
    match std::env::var("HF_TOKEN") {
        Ok(t) if !t.is_empty() => vec![("Authorization".into(), format!("Bearer {t}"))],
        _ => Vec::new(),
    }
}

/// The sha256 the hub publishes for the file at `url`: its `X-Linked-Etag` (LFS files), read
/// from the first response without following the redirect to the CDN.
pub fn weights_sha256(client: &Client, url: &str) -> Result<String, FetchError> {
    let mut last = String::new();
    for attempt in 0..client.attempts.max(1) {
        if attempt > 0 {
            std::thread::sleep(client.backoff * 2u32.saturating_pow(attempt - 1));
        }
        let mut req = client.no_redirect.head(url);
        for (k, v) in auth_headers() {
            req = req.header(k, v);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let status = resp.status().as_u16();
        if status >= 500 {
            last = format!("HTTP {status}");
            continue;
        }
        if status >= 400 {
            return Err(FetchError::Http {
                url: url.to_string(),
                status,
                hint: if status == 404 {
                    " (no such timm checkpoint on the hub: check the name and tag)".into()
                } else {
                    " (set HF_TOKEN for a gated or private file)".into()
                },
            });
        }
        let etag = ["x-linked-etag", "etag"].iter().find_map(|h| {
            let v = resp.headers().get(*h)?.to_str().ok()?;
            let v = v
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_ascii_lowercase();
            (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())).then_some(v)
        });
        return etag.ok_or_else(|| {
            FetchError::Unsupported(format!(
                "{url}: the hub published no sha256 (no X-Linked-Etag header); download the file \
                 by hand and check it"
            ))
        });
    }
    Err(FetchError::Network {
        url: url.to_string(),
        attempts: client.attempts.max(1),
        reason: last,
        manual: format!("download {url} and save it as the suite's `backbone.weights` file"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_tag_from_the_file_name() {
        assert_eq!(
            WeightsRef::from_file_name("vit_base_patch16_224.augreg2_in21k_ft_in1k.safetensors"),
            Some(WeightsRef {
                name: "vit_base_patch16_224".into(),
                tag: "augreg2_in21k_ft_in1k".into()
            })
        );
        assert_eq!(WeightsRef::from_file_name("vit.bin"), None);
        assert_eq!(WeightsRef::from_file_name("vit.safetensors"), None);
    }
}
